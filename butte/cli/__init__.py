"""The ``butte`` command line: ``butte master|agent|local|run|version`` (see `main`)."""
