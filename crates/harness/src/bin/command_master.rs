//! A master running any command as its worker (command mode):
//! `command-master ADDR PROGRAM [ARGS...]`.

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: command-master ADDR PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let mut config = overseer::Config::command(program)
        .named_address("web", addr)
        .terminate_timeout(Duration::from_secs(5))
        .required(true);
    for a in args {
        config = config.arg(a);
    }
    overseer::run(config);
}
