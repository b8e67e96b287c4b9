"""One module per `sercli` subcommand: click options turned into one typed run, handed to the
library. Each imports its heavy modules inside the command, so `sercli --help` stays instant."""
