//! `POST /add`: import through the local daemon, then pin the root as any other pin.

use futures::stream::{self, BoxStream, StreamExt};

use super::{AddOptions, Cluster};
use crate::ipfs::car::{ByteStream, CarUpload};
use crate::ipfs::{AddRequest, AddedEntry};
use crate::types::AddedOutput;
use crate::{Error, Result};

impl Cluster {
    /// Streams the daemon's entries as they come; the last one (the root) is held back until it
    /// is pinned, and then carries the pin's allocations. With `local`, this peer comes first
    /// among the allocations.
    pub async fn add(
        &self,
        request: AddRequest,
        options: AddOptions,
    ) -> Result<BoxStream<'static, Result<AddedOutput>>> {
        let entries = self.inner.ipfs.add(request).await?;
        let options = self.local_first(options);
        let cluster = self.clone();
        let stream = stream::unfold(
            (entries, None::<AddedEntry>, Some((cluster, options))),
            |(mut entries, held, finish)| async move {
                match entries.next().await {
                    Some(Ok(entry)) => {
                        let out = held.map(|e| Ok(output(e, None)));
                        Some((out, (entries, Some(entry), finish)))
                    }
                    Some(Err(e)) => Some((Some(Err(e)), (entries, None, None))),
                    None => {
                        let (cluster, options) = finish?;
                        let root = held?;
                        Some((Some(cluster.pin_root(root, options).await), (entries, None, None)))
                    }
                }
            },
        )
        .filter_map(futures::future::ready);
        Ok(stream.boxed())
    }

    /// `POST /add?format=car`: imports the blocks of `archive` (a CAR with one root) through the
    /// local daemon, then pins the root. One output, as the reference's CAR adder gives: the
    /// upload's `name`, the root, the bytes of all blocks and the root's UnixFS file size.
    pub async fn add_car(&self, name: String, archive: ByteStream, options: AddOptions) -> Result<AddedOutput> {
        let upload = CarUpload::open(archive).await?;
        let imported = self.inner.ipfs.dag_import(upload.body).await;
        // A malformed archive is the client's fault, whatever the daemon made of it.
        let summary = match upload.summary.await {
            Ok(Err(why)) => return Err(Error::BadRequest(why)),
            Ok(Ok(summary)) => Some(summary),
            Err(_) => None,
        };
        imported?;
        let summary = summary.ok_or_else(|| Error::Ipfs("dag/import answered before reading the whole CAR".into()))?;
        let root = AddedEntry { name, cid: upload.root, bytes: summary.bytes, size: summary.size };
        self.pin_root(root, self.local_first(options)).await
    }

    /// With `local`, the content is in this peer's daemon already: it holds the pin first.
    fn local_first(&self, mut options: AddOptions) -> AddOptions {
        let me = self.inner.identity.peer_id;
        if options.local && !options.pin.user_allocations.contains(&me) {
            options.pin.user_allocations.insert(0, me);
        }
        options
    }

    /// The output for the root of an add, pinned unless `no-pin`.
    async fn pin_root(&self, root: AddedEntry, options: AddOptions) -> Result<AddedOutput> {
        if options.no_pin {
            return Ok(output(root, None));
        }
        let pin = self.pin(root.cid, options.pin).await?;
        Ok(output(root, Some(pin.allocations.iter().map(ToString::to_string).collect())))
    }
}

fn output(entry: AddedEntry, allocations: Option<Vec<String>>) -> AddedOutput {
    AddedOutput { name: entry.name, cid: Some(entry.cid), bytes: entry.bytes, size: entry.size, allocations }
}
