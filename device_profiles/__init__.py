"""Factory device profiles, one TOML file per DP model (shipped as package data)."""
