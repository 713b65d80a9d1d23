"""The package's error for bad input: an impossible or unknown value in a config, a profile or a file."""


class ConfigError(ValueError):
    """An impossible or unknown configuration value; the message names the field."""


class ProfileError(ValueError):
    """A device-profile file that is missing, not JSON, or not a valid profile; the message names the field."""
