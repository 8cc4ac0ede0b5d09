//! The newest entries of the log, kept as they were appended.
//!
//! On a leader every entry is read back at once, for each follower's replication and for the
//! apply; on a follower, for the apply. Answering those reads from memory spares a read
//! transaction, a decode and a hand-off to a blocking thread per read. Entries leave from the front
//! once the flusher wrote them and the tail is over its budget, so everything before the tail is
//! in the file. What was written is counted in appends, not indexes: after a truncation the same
//! index may be appended again, unwritten.

use std::collections::VecDeque;
use std::ops::Bound;

use super::super::types::{Entry, LogId};

/// Bytes of encoded entries the tail keeps beyond those not yet written (which it always keeps):
/// room for a follower that lags by a few thousand typical entries.
const TAIL_BYTES: usize = 16 * 1024 * 1024;

/// The number of an append: they are written in order.
pub(super) type AppendSeq = u64;

struct Held {
    entry: Entry,
    /// Its encoded size.
    bytes: usize,
    /// The append that brought it.
    seq: AppendSeq,
}

#[derive(Default)]
pub(super) struct Tail {
    /// Consecutive indexes.
    entries: VecDeque<Held>,
    bytes: usize,
    /// The last append started.
    appended: AppendSeq,
    /// Every append up to this one is in the file.
    written: AppendSeq,
}

impl Tail {
    /// Adds one append's entries, each with its encoded size, after the last one, and returns the
    /// append's number. An entry that does not follow (the log was truncated behind the tail's
    /// back, which [`Tail::truncate`] prevents) starts the tail afresh.
    pub fn push(&mut self, entries: impl IntoIterator<Item = (Entry, usize)>) -> AppendSeq {
        self.appended += 1;
        for (entry, bytes) in entries {
            if self.last().is_some_and(|last| last.index + 1 != entry.log_id.index) {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += bytes;
            self.entries.push_back(Held { entry, bytes, seq: self.appended });
        }
        self.appended
    }

    pub fn last(&self) -> Option<LogId> {
        self.entries.back().map(|held| held.entry.log_id)
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|held| held.entry.log_id.index)
    }

    /// Forgets the entries from `index` on.
    pub fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|held| held.entry.log_id.index >= index) {
            self.pop_back();
        }
    }

    /// Forgets the entries up to `index`.
    pub fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|held| held.entry.log_id.index <= index) {
            self.pop_front();
        }
    }

    /// Records that the appends up to `seq` are in the file, and lets the oldest entries go while
    /// over budget.
    pub fn written(&mut self, seq: AppendSeq) {
        self.written = self.written.max(seq);
        while self.bytes > TAIL_BYTES && self.entries.front().is_some_and(|held| held.seq <= self.written) {
            self.pop_front();
        }
    }

    /// The entries of `range` held here, and the start of the range left to read from the file
    /// (`None`: the tail holds all of it).
    pub fn read(&self, range: &(Bound<u64>, Bound<u64>)) -> (Vec<Entry>, Option<u64>) {
        let start = match range.0 {
            Bound::Included(start) => start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let Some(first) = self.first_index() else { return (Vec::new(), Some(start)) };
        // Indexes are consecutive: the range's place in the tail is arithmetic, not a scan.
        let end = match range.1 {
            Bound::Included(end) => end.saturating_add(1),
            Bound::Excluded(end) => end,
            Bound::Unbounded => u64::MAX,
        };
        let offset = |index: u64| (index.saturating_sub(first) as usize).min(self.entries.len());
        let (from, to) = (offset(start), offset(end));
        let entries = self.entries.range(from..to.max(from)).map(|held| held.entry.clone()).collect();
        (entries, (start < first).then_some(start))
    }

    fn pop_front(&mut self) {
        if let Some(held) = self.entries.pop_front() {
            self.bytes -= held.bytes;
        }
    }

    fn pop_back(&mut self) {
        if let Some(held) = self.entries.pop_back() {
            self.bytes -= held.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// One append per entry.
    fn tail_of(range: std::ops::RangeInclusive<u64>, bytes: usize) -> Tail {
        let mut tail = Tail::default();
        for index in range {
            tail.push([(entry(index), bytes)]);
        }
        tail
    }

    #[test]
    fn reads_say_what_is_left_for_the_file() {
        let tail = tail_of(5..=9, 10);
        // (range, indexes from the tail, start left for the file)
        type Range = (Bound<u64>, Bound<u64>);
        let cases: &[(Range, &[u64], Option<u64>)] = &[
            ((Bound::Included(5), Bound::Excluded(10)), &[5, 6, 7, 8, 9], None),
            ((Bound::Included(7), Bound::Included(8)), &[7, 8], None),
            ((Bound::Excluded(6), Bound::Unbounded), &[7, 8, 9], None),
            ((Bound::Included(9), Bound::Excluded(20)), &[9], None),
            ((Bound::Included(12), Bound::Excluded(20)), &[], None),
            ((Bound::Included(2), Bound::Excluded(7)), &[5, 6], Some(2)),
            ((Bound::Unbounded, Bound::Excluded(4)), &[], Some(0)),
            ((Bound::Included(1), Bound::Excluded(5)), &[], Some(1)),
            ((Bound::Included(5), Bound::Included(5)), &[5], None),
            ((Bound::Included(8), Bound::Excluded(7)), &[], None),
            ((Bound::Unbounded, Bound::Unbounded), &[5, 6, 7, 8, 9], Some(0)),
            ((Bound::Excluded(u64::MAX), Bound::Unbounded), &[], None),
        ];
        for (range, held, left) in cases {
            let (entries, before) = tail.read(range);
            assert_eq!(indexes(&entries), *held, "{range:?}");
            assert_eq!(before, *left, "{range:?}");
        }
        let (entries, before) = Tail::default().read(&(Bound::Included(3), Bound::Unbounded));
        assert!(entries.is_empty());
        assert_eq!(before, Some(3), "an empty tail leaves everything to the file");
    }

    #[test]
    fn only_written_entries_leave_and_only_over_budget() {
        let per_entry = TAIL_BYTES / 4;
        let mut tail = tail_of(1..=8, per_entry);
        tail.written(2);
        assert_eq!(tail.first_index(), Some(3), "written entries go while over budget");
        tail.written(8);
        assert_eq!(tail.first_index(), Some(5), "down to the budget, not below");
        assert_eq!(tail.bytes, TAIL_BYTES);
    }

    #[test]
    fn an_index_appended_again_after_a_truncation_is_not_taken_as_written() {
        let per_entry = TAIL_BYTES * 2 / 3;
        let mut tail = tail_of(1..=2, per_entry);
        tail.truncate(2);
        let again = tail.push([(entry(2), per_entry), (entry(3), per_entry)]);
        // The flusher reports the append that wrote the first index 2 only now.
        tail.written(2);
        assert_eq!(tail.first_index(), Some(2), "entry 1 went; the second index 2 is not in the file yet");
        tail.written(again);
        assert_eq!(tail.first_index(), Some(3));
    }

    #[test]
    fn truncate_and_purge_cut_both_ends() {
        let mut tail = tail_of(1..=10, 1);
        tail.truncate(8);
        tail.purge(3);
        assert_eq!(tail.first_index(), Some(4));
        assert_eq!(tail.last().map(|id| id.index), Some(7));
        assert_eq!(tail.bytes, 4);
        tail.push([(entry(8), 1)]);
        assert_eq!(tail.last().map(|id| id.index), Some(8), "appended again after the cut");
        tail.push([(entry(20), 1)]);
        assert_eq!((tail.first_index(), tail.bytes), (Some(20), 1), "a gap starts afresh");
    }
}
