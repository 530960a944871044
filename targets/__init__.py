"""The board presets, one JSON file each (compiler/targets.py reads them). pyproject.toml installs this folder
as the package `compiler.presets`, so that an installed wheel has them as package data."""
