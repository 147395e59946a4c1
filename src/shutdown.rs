//! Signals become one cancellation token: the first SIGINT or SIGTERM starts an orderly
//! shutdown, a second one ends the process at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Waits for SIGINT/SIGTERM and cancels `token`; exits on the second signal. Returns when the
/// token is cancelled by anyone.
pub async fn on_signal(token: CancellationToken) {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot listen for signals; stop ProcOS with SIGKILL");
        token.cancelled().await;
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        () = token.cancelled() => return,
    }
    eprintln!("procos: stopping (send the signal again to stop at once)");
    token.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("procos: stopped at once");
    std::process::exit(130);
}
