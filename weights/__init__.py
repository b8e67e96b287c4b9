"""Trained weights shipped with sercli, with their model cards (installed as sercli.pretrained)."""
