//! One module per subcommand, plus the table printer the readers share.

pub(crate) mod demo;
pub(crate) mod drain;
pub(crate) mod loadgen;
pub(crate) mod read;
pub(crate) mod replay;
pub(crate) mod serve;
pub(crate) mod table;
