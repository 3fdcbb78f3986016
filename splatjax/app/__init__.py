"""The application layer: run folders, checkpoints, reports, figures and the command line,
built on the engine stages. Nothing in the engine imports this package."""
