"""The package's error for bad input: an impossible or unknown value in a config, a profile or a file."""


class ConfigError(ValueError):
    """An impossible or unknown configuration value; the message names the field."""
