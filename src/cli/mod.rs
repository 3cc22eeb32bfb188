//! One module per subcommand of the `flowdaq` binary.
pub mod bench;
pub mod check_sender;
pub mod demo;
pub mod plot;
pub mod replay;
pub mod serve;
pub mod sql;
