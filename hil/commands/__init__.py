"""One module per CLI subcommand, each with ``add_subparser(subparsers)``."""
