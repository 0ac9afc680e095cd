//! The self-upgrading server the upgrade tests and benchmark run. All of it
//! — the build stamp words and the `UA_*` environment variables that
//! configure it — is in `overseer_harness::app`, shared with the demo's app
//! mode.

fn main() {
    overseer_harness::app::main_from_env();
}
