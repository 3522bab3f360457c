//! End-to-end tests: real lindi-collector and lindi-agent processes on loopback.
