//! `moose-chunkserver -c CFG [-f] start|stop|restart|reload|status|test|kill`.

use std::process::ExitCode;

fn main() -> ExitCode {
    moose_common::daemon::main(&moose_chunkserver::SPEC, |ctx| async move {
        moose_chunkserver::service::run(ctx).await
    })
}
