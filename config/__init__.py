from config.config import Config, ConfigError, config

__all__ = ["Config", "ConfigError", "config"]
