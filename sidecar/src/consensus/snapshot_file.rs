//! The snapshot data openraft moves around: a file. A snapshot being received is also read while
//! it is written ([`Arriving`]), so that the pinset is restored as its chunks arrive and the
//! install is done soon after the last one, rather than a whole restore later.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// How long a reader at the end of what arrived waits before it looks again. A write wakes it
/// sooner; this covers the bytes of a write that reach the file just after its wake-up.
const RECHECK: Duration = Duration::from_millis(10);

/// openraft's `SnapshotData`: the current snapshot, read to be sent, or one being received.
pub struct SnapshotFile {
    file: tokio::fs::File,
    /// Set on a file being received: tells its [`Arriving`] reader about each write.
    receiving: Option<Receiving>,
}

impl SnapshotFile {
    pub(super) fn new(file: tokio::fs::File) -> Self {
        SnapshotFile { file, receiving: None }
    }

    /// A file about to be received into, and the progress its reader follows.
    pub(super) fn receiving(file: tokio::fs::File) -> (Self, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        (SnapshotFile { file, receiving: Some(Receiving(progress.clone())) }, progress)
    }

    /// Whether this is the file whose arrival `progress` follows.
    pub(super) fn is_followed_by(&self, progress: &Arc<Progress>) -> bool {
        self.receiving.as_ref().is_some_and(|Receiving(own)| Arc::ptr_eq(own, progress))
    }

    /// The file, every write finished: handed over, a file being received is complete.
    pub(super) async fn into_std(self) -> std::fs::File {
        let SnapshotFile { file, receiving } = self;
        let file = file.into_std().await;
        if let Some(Receiving(progress)) = &receiving {
            progress.end(Phase::Complete);
        }
        file
    }
}

/// The writer's side of a [`Progress`]: dropped before the file was shut down, the transfer was
/// given up.
struct Receiving(Arc<Progress>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.end(Phase::Abandoned);
    }
}

/// How far the receipt of a snapshot file is.
#[derive(Default)]
pub(super) struct Progress {
    phase: Mutex<Phase>,
    changed: Condvar,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Phase {
    #[default]
    Arriving,
    /// Every byte is in the file.
    Complete,
    /// The transfer stopped before its end (a newer snapshot, a new leader, a shutdown).
    Abandoned,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrote(&self) {
        self.changed.notify_all();
    }

    /// Ends the transfer: the first end given is the one that holds.
    fn end(&self, how: Phase) {
        let mut phase = self.lock();
        if *phase == Phase::Arriving {
            *phase = how;
        }
        self.changed.notify_all();
    }

    pub(super) fn abandon(&self) {
        self.end(Phase::Abandoned);
    }
}

/// Reads a snapshot file while it is received: at the end of what has arrived it waits for more,
/// and finds the end of the file only once the transfer is complete. A transfer given up is an
/// error, so a restore following it stops.
pub(super) struct Arriving {
    file: std::fs::File,
    progress: Arc<Progress>,
}

impl Arriving {
    pub(super) fn new(file: std::fs::File, progress: Arc<Progress>) -> Self {
        Arriving { file, progress }
    }
}

impl Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Looked at before reading: complete then, a read that finds nothing is at the end.
            let phase = *self.progress.lock();
            let n = self.file.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match phase {
                Phase::Complete => return Ok(0),
                Phase::Abandoned => return Err(io::Error::other("the transfer stopped before the end")),
                Phase::Arriving => {
                    let phase = self.progress.lock();
                    if *phase == Phase::Arriving {
                        let _ = self.progress.changed.wait_timeout(phase, RECHECK);
                    }
                }
            }
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.file).poll_write(cx, buf);
        if let (Poll::Ready(Ok(_)), Some(Receiving(progress))) = (&written, &self.receiving) {
            progress.wrote();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    /// openraft shuts the file down after its last chunk: once every byte is in the file, the
    /// transfer is complete.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = Pin::new(&mut self.file).poll_shutdown(cx);
        if let (Poll::Ready(Ok(())), Some(Receiving(progress))) = (&shut, &self.receiving) {
            progress.end(Phase::Complete);
        }
        shut
    }
}
