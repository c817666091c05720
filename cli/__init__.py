"""provgen.cli: the click command line (entry point ``provgen = provgen.cli.main:main``)."""
