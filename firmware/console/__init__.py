"""The serial admin console: line discipline, sans-IO shell, and its transports."""
