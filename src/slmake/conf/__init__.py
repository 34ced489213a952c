"""Hydra configs that ship with the package (`hydra.searchpath: [pkg://slmake.conf]` in conf/config.yaml)."""
