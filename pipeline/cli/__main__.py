"""`python -m pipeline.cli ...` is the `pipeline` command."""
from pipeline.cli.main import main

main()
