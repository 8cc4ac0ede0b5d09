//! CAR (content-addressed archive, v1) uploads, for `POST /add?format=car`.
//!
//! The archive is read block by block (iroh-car) and framed again as it goes on to the daemon's
//! `dag/import`. So a malformed archive is found here, and what the reference reports for a CAR
//! (the root, the bytes of all blocks, the root's UnixFS file size) is known when the import ends.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use iroh_car::{CarHeader, CarReader};
use tokio::sync::oneshot;
use tokio_util::io::StreamReader;

use crate::types::Cid;
use crate::{Error, Result};

/// The bytes of an upload or of a request body.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Multicodec of dag-pb, the codec of UnixFS nodes.
const DAG_PB: u64 = 0x70;

/// What the reference reports for an imported CAR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CarSummary {
    /// The bytes of all blocks.
    pub bytes: u64,
    /// The root's UnixFS file size when the root is in the archive and is a UnixFS node, else 0.
    pub size: u64,
}

/// An archive whose header was read: its one root, and its blocks still to come.
pub struct CarUpload {
    pub root: Cid,
    /// The archive again, framed block by block as it is read, for the daemon.
    pub body: ByteStream,
    /// Resolves when `body` ended: the summary, or why the archive is malformed. Dropped without
    /// a value when `body` was dropped before its end.
    pub summary: oneshot::Receiver<std::result::Result<CarSummary, String>>,
}

impl CarUpload {
    /// Reads the header of `archive`: a CAR v1 with exactly one root, as the reference accepts.
    pub async fn open(archive: ByteStream) -> Result<CarUpload> {
        let reader = CarReader::new(StreamReader::new(archive)).await.map_err(|e| Error::BadRequest(e.to_string()))?;
        let root = match reader.header().roots() {
            [root] => *root,
            _ => return Err(Error::BadRequest("only CAR files with a single root are supported".into())),
        };
        let header = CarHeader::new_v1(vec![root]).encode().map_err(|e| Error::BadRequest(e.to_string()))?;
        let (done, summary) = oneshot::channel();
        let blocks = stream::unfold(Some((reader, CarSummary::default(), done)), move |state| async move {
            let (mut reader, mut summary, done) = state?;
            match reader.next_block().await {
                Ok(Some((cid, data))) => {
                    summary.bytes += data.len() as u64;
                    if cid == root {
                        summary.size = unixfs_file_size(&cid, &data);
                    }
                    Some((Ok(section(&cid.to_bytes(), &data)), Some((reader, summary, done))))
                }
                Ok(None) => {
                    let _ = done.send(Ok(summary));
                    None
                }
                Err(e) => {
                    let why = format!("malformed CAR: {e}");
                    let _ = done.send(Err(why.clone()));
                    Some((Err(io::Error::new(io::ErrorKind::InvalidData, why)), None))
                }
            }
        });
        let body = stream::once(async move { Ok(section(&header, &[])) }).chain(blocks).boxed();
        Ok(CarUpload { root, body, summary })
    }
}

/// One section of a CAR: the varint length of `head` and `data` together, then both.
fn section(head: &[u8], data: &[u8]) -> Bytes {
    let mut length = unsigned_varint::encode::usize_buffer();
    let length = unsigned_varint::encode::usize(head.len() + data.len(), &mut length);
    let mut out = BytesMut::with_capacity(length.len() + head.len() + data.len());
    out.put_slice(length);
    out.put_slice(head);
    out.put_slice(data);
    out.freeze()
}

/// The `filesize` of a dag-pb block's UnixFS data (0 when the block is not a UnixFS node or
/// does not say), as the reference reports it for a CAR's root.
fn unixfs_file_size(cid: &Cid, block: &[u8]) -> u64 {
    const PB_NODE_DATA: u64 = 1;
    const UNIXFS_FILESIZE: u64 = 3;
    if cid.codec() != DAG_PB {
        return 0;
    }
    let Some(Field::Bytes(data)) = protobuf_field(block, PB_NODE_DATA) else { return 0 };
    match protobuf_field(data, UNIXFS_FILESIZE) {
        Some(Field::Varint(size)) => size,
        _ => 0,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The first field numbered `wanted` of a protobuf message, or `None` when absent or malformed.
fn protobuf_field(mut message: &[u8], wanted: u64) -> Option<Field<'_>> {
    use unsigned_varint::decode;
    while !message.is_empty() {
        let (key, rest) = decode::u64(message).ok()?;
        let (field, rest) = match key & 7 {
            0 => decode::u64(rest).ok().map(|(v, rest)| (Field::Varint(v), rest))?,
            1 => (Field::Fixed, rest.get(8..)?),
            2 => {
                let (length, rest) = decode::usize(rest).ok()?;
                (Field::Bytes(rest.get(..length)?), rest.get(length..)?)
            }
            5 => (Field::Fixed, rest.get(4..)?),
            _ => return None,
        };
        if key >> 3 == wanted {
            return Some(field);
        }
        message = rest;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use futures::TryStreamExt;
    use iroh_car::CarWriter;

    use super::*;
    use crate::ipfs::fake::raw_block_cid;

    /// A CAR v1 of `blocks` with `roots`, as `dag export` writes it.
    pub(crate) async fn car(roots: Vec<Cid>, blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
        let mut writer = CarWriter::new(CarHeader::new_v1(roots), Vec::new());
        for (cid, data) in blocks {
            writer.write(*cid, data).await.unwrap();
        }
        writer.finish().await.unwrap()
    }

    pub(crate) fn chunks(bytes: Vec<u8>, size: usize) -> ByteStream {
        let pieces: Vec<io::Result<Bytes>> = bytes.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        stream::iter(pieces).boxed()
    }

    /// A dag-pb node whose UnixFS data says `filesize`: PBNode { Data: Data { Type: File, filesize } }.
    fn unixfs_file_node(filesize: u8) -> (Cid, Vec<u8>) {
        let unixfs = [0x08, 0x02, 0x18, filesize];
        let mut node = vec![0x0a, unixfs.len() as u8];
        node.extend_from_slice(&unixfs);
        let cid = Cid::new_v1(DAG_PB, *raw_block_cid(&node).hash());
        (cid, node)
    }

    #[tokio::test]
    async fn one_root_passes_through_with_the_reference_summary() {
        let (root, node) = unixfs_file_node(42);
        let leaf = b"leaf".to_vec();
        let archive = car(vec![root], &[(root, node.clone()), (raw_block_cid(&leaf), leaf.clone())]).await;
        let upload = CarUpload::open(chunks(archive.clone(), 3)).await.unwrap();
        assert_eq!(upload.root, root);
        let framed: Vec<Bytes> = upload.body.try_collect().await.unwrap();
        assert_eq!(framed.concat(), archive, "a canonical archive goes on unchanged");
        let summary = upload.summary.await.unwrap().unwrap();
        assert_eq!(summary, CarSummary { bytes: (node.len() + leaf.len()) as u64, size: 42 });
    }

    #[tokio::test]
    async fn not_one_root_or_not_a_car_is_a_bad_request() {
        let (a, b) = (raw_block_cid(b"a"), raw_block_cid(b"b"));
        let two = car(vec![a, b], &[(a, b"a".to_vec()), (b, b"b".to_vec())]).await;
        let cases: [(Vec<u8>, &str); 3] = [
            (two, "only CAR files with a single root are supported"),
            (b"not a car at all".to_vec(), "CAR"),
            (Vec::new(), "CAR"),
        ];
        for (archive, message) in cases {
            match CarUpload::open(chunks(archive, 5)).await {
                Err(Error::BadRequest(m)) => assert!(m.contains(message), "{m}"),
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("accepted"),
            }
        }
    }

    #[tokio::test]
    async fn a_truncated_archive_fails_its_body_and_summary() {
        let leaf = b"some leaf data".to_vec();
        let cid = raw_block_cid(&leaf);
        let mut archive = car(vec![cid], &[(cid, leaf)]).await;
        archive.truncate(archive.len() - 3);
        let upload = CarUpload::open(chunks(archive, 4)).await.unwrap();
        assert!(upload.body.try_collect::<Vec<Bytes>>().await.is_err());
        assert!(upload.summary.await.unwrap().unwrap_err().starts_with("malformed CAR"));
    }

    #[test]
    fn unixfs_sizes_only_of_unixfs_nodes() {
        let (cid, node) = unixfs_file_node(7);
        assert_eq!(unixfs_file_size(&cid, &node), 7);
        assert_eq!(unixfs_file_size(&raw_block_cid(&node), &node), 0, "a raw block is no UnixFS node");
        assert_eq!(unixfs_file_size(&cid, &[0x0a, 0x09, 0x08]), 0, "truncated");
        assert_eq!(protobuf_field(&[0x12, 0x01, 0xff, 0x08, 0x05], 1), Some(Field::Varint(5)), "skips field 2");
        assert_eq!(protobuf_field(&[0x0d, 1, 2, 3, 4, 0x10, 0x01], 2), Some(Field::Varint(1)), "skips fixed32");
        assert_eq!(protobuf_field(&[0x0f], 1), None, "wire type 7 does not exist");
    }
}
