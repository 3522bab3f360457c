//! End-to-end tests: real lindi-collector and lindi-agent processes on loopback.
//! One test binary with modules (one link on a 2-core machine).

mod api_fuzz;
mod bundles;
mod capture;
mod cluster;
mod console;
mod delivery;
mod enrollment;
mod escalation;
mod fim;
mod hostile;
mod intel;
mod peering;
mod privileges;
mod query;
mod reports;
mod sigma;
