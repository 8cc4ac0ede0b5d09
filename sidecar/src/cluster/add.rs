//! `POST /add`: import through the local daemon, then pin the root as any other pin.

use futures::stream::{self, BoxStream, StreamExt};

use super::{AddOptions, Cluster};
use crate::ipfs::{AddRequest, AddedEntry};
use crate::types::AddedOutput;
use crate::Result;

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
        let mut options = options;
        let me = self.inner.identity.peer_id;
        if options.local && !options.pin.user_allocations.contains(&me) {
            // The content is in this peer's daemon already: it holds the pin first.
            options.pin.user_allocations.insert(0, me);
        }
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
                        let result = if options.no_pin {
                            Ok(output(root, None))
                        } else {
                            cluster.pin(root.cid, options.pin).await.map(|pin| {
                                let allocations = pin.allocations.iter().map(ToString::to_string).collect();
                                output(root, Some(allocations))
                            })
                        };
                        Some((Some(result), (entries, None, None)))
                    }
                }
            },
        )
        .filter_map(futures::future::ready);
        Ok(stream.boxed())
    }
}

fn output(entry: AddedEntry, allocations: Option<Vec<String>>) -> AddedOutput {
    AddedOutput { name: entry.name, cid: Some(entry.cid), bytes: entry.bytes, size: entry.size, allocations }
}
