#!/bin/bash
# One staging step on the GPU machine, run by every call: keeps the parts this call carried
# (.dev*/data.part*, .devpack/*.part*) in /tmp/stage, and installs the carried packages into /tmp/site
# (wheels from .dev*/wheels, unpacked packages from .dev*/site) once.
mkdir -p /tmp/stage /tmp/site
for part in .dev*/data.part* .devpack/*.part*; do
  [ -f "$part" ] && { cp "$part" /tmp/stage/ || exit 3; }
done
for wheel in .dev*/wheels/*.whl; do
  [ -f "$wheel" ] || continue
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .dev*/wheels/*.whl || exit 4
  break
done
for package in .dev*/site/*; do
  [ -d "$package" ] && cp -r "$package" /tmp/site/
done
ls -la /tmp/stage
exit 0
