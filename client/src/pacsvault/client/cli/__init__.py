"""The pacsvault command line: one module per subcommand."""
