//! The values of a `count(DISTINCT ...)` per group, as `KeyedCountExec` keeps them.
//!
//! DataFusion's partial aggregate keeps one hash set per group and adds a batch to them
//! group by group: it takes each group's rows out of the batch first. Over the history
//! (3.1 M 40-character ids in 11 groups) that was most of the `count(DISTINCT id)`
//! query's CPU. [`ByteSet`] is one table for every group: a row's group and bytes are
//! hashed once and looked up where they are, and a value is copied only the first time
//! its group sees it. The ids of one snapshot arrive in the order of the snapshot before
//! (files are sorted by name, then id), so most rows find their value in the entry after
//! the last row's, without hashing.
//!
//! The output is the partial aggregate's own state: per group, a list of its values,
//! which DataFusion's final aggregate adds to its sets.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryViewBuilder, ListArray, StringViewBuilder, new_empty_array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::hash_utils::RandomState;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::scalar::ScalarValue;

/// One `count(DISTINCT arg)`: every group's distinct values so far.
pub(super) enum Distinct {
    /// Values of a string or binary view column, by their bytes.
    Bytes(ByteSet),
    /// Values of a column that holds one value a batch (a partition column).
    Scalars(HashSet<(u32, ScalarValue), RandomState>),
}

impl Distinct {
    /// The bytes the set holds, about: what it reserves from the memory pool.
    pub(super) fn memory_size(&self) -> usize {
        match self {
            Distinct::Bytes(set) => set.memory_size(),
            Distinct::Scalars(set) => set.capacity() * size_of::<(u32, ScalarValue)>(),
        }
    }

    /// The set for an argument of type `data_type`.
    pub(super) fn new(data_type: &DataType) -> Distinct {
        if by_bytes(data_type) {
            Distinct::Bytes(ByteSet::default())
        } else {
            Distinct::Scalars(HashSet::with_hasher(RandomState::default()))
        }
    }

    /// The partial aggregate's state for groups `0..groups`: per group a list of its
    /// values, each of `item`'s type.
    pub(super) fn state(&self, groups: usize, item: &FieldRef) -> DfResult<ArrayRef> {
        let (lengths, values): (Vec<usize>, ArrayRef) = match self {
            Distinct::Bytes(set) => {
                let (lengths, order) = by_group(groups, set.entries.iter().map(|e| e.group))?;
                let values = order.iter().map(|&e| set.value(e as usize));
                (lengths, views(item.data_type(), values)?)
            }
            Distinct::Scalars(set) => {
                let entries: Vec<&(u32, ScalarValue)> = set.iter().collect();
                let (lengths, order) = by_group(groups, entries.iter().map(|(g, _)| *g))?;
                let values = if order.is_empty() {
                    new_empty_array(item.data_type())
                } else {
                    let scalars = order.iter().map(|&e| entries[e as usize].1.clone());
                    ScalarValue::iter_to_array(scalars)?
                };
                // A partition column may be dictionary-encoded; the state holds its values.
                let values = if values.data_type() == item.data_type() {
                    values
                } else {
                    arrow::compute::cast(&values, item.data_type())?
                };
                (lengths, values)
            }
        };
        let list = ListArray::try_new(
            Arc::clone(item),
            OffsetBuffer::from_lengths(lengths),
            values,
            None,
        )?;
        Ok(Arc::new(list))
    }
}

/// Whether values of `data_type` (string or binary views) are kept by their bytes.
pub(super) fn by_bytes(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Utf8View | DataType::BinaryView)
}

/// For entries of the given groups (each below `groups`): how many each group has, and
/// the entries' indexes ordered by group.
fn by_group(
    groups: usize,
    of: impl Iterator<Item = u32> + Clone,
) -> DfResult<(Vec<usize>, Vec<u32>)> {
    let mut lengths = vec![0_usize; groups];
    for g in of.clone() {
        *lengths
            .get_mut(g as usize)
            .ok_or_else(|| DataFusionError::Internal(format!("distinct value of group {g}")))? += 1;
    }
    let mut next: Vec<usize> = lengths
        .iter()
        .scan(0, |start, &n| {
            let at = *start;
            *start += n;
            Some(at)
        })
        .collect();
    let mut order = vec![0_u32; lengths.iter().sum()];
    for (e, g) in of.enumerate() {
        // At most `u32::MAX` entries: `ByteSet::insert` refuses more.
        order[next[g as usize]] = e as u32;
        next[g as usize] += 1;
    }
    Ok((lengths, order))
}

/// An array of `data_type` (string or binary views) of `values`.
fn views<'a>(data_type: &DataType, values: impl Iterator<Item = &'a [u8]>) -> DfResult<ArrayRef> {
    match data_type {
        DataType::Utf8View => {
            let mut b = StringViewBuilder::new();
            for v in values {
                let s = std::str::from_utf8(v).map_err(|e| {
                    DataFusionError::Execution(format!("a count(DISTINCT) value: {e}"))
                })?;
                b.append_value(s);
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::BinaryView => {
            let mut b = BinaryViewBuilder::new();
            for v in values {
                b.append_value(v);
            }
            Ok(Arc::new(b.finish()))
        }
        other => Err(DataFusionError::Internal(format!(
            "count(DISTINCT) of bytes kept as {other}"
        ))),
    }
}

/// Distinct `(group, bytes)` pairs: open addressing over entries whose bytes are copied
/// into one buffer, in the order first seen.
///
/// A value is first compared with the entry after the one the last value found or
/// added (or the one after that, or the one before, for two rows swapped): a
/// history's snapshots list their machines in one order (sorted by name, then id), so
/// from the second snapshot on nearly every row finds its value there without hashing
/// it or reading the table.
#[derive(Default)]
pub(super) struct ByteSet {
    /// Per slot, 0 when free, or the low 32 bits of its entry's hash, then the entry's
    /// index + 1 in the low 32 bits. A power of two long, at most half full.
    slots: Vec<u64>,
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    hasher: RandomState,
    /// The entry after the one the last value found or added.
    next: usize,
}

struct Entry {
    hash: u64,
    /// The value's first 8 bytes (zero-padded): most values that differ, differ there,
    /// and the entry is read anyway, while the value's bytes are elsewhere.
    prefix: u64,
    group: u32,
    len: u32,
    start: usize,
}

impl ByteSet {
    /// The bytes the table, its entries and their values take.
    fn memory_size(&self) -> usize {
        self.slots.capacity() * size_of::<u64>()
            + self.entries.capacity() * size_of::<Entry>()
            + self.bytes.capacity()
    }

    /// Adds `value` to `group`'s values, if it is not one of them yet.
    pub(super) fn insert(&mut self, group: u32, value: &[u8]) -> DfResult<()> {
        let prefix = prefix(value);
        // The next entry, the one after it, and the one before (two rows swapped).
        for at in [self.next, self.next + 1, self.next.wrapping_sub(2)] {
            if self.holds(at, group, prefix, value) {
                self.next = at + 1;
                return Ok(());
            }
        }
        if (self.entries.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let hash = self.hasher.hash_one((group, value));
        let tag = hash << 32;
        let mask = self.slots.len() - 1;
        let mut at = self.slot(hash);
        loop {
            let s = self.slots[at];
            if s == 0 {
                break;
            }
            if s >> 32 == tag >> 32 {
                let found = (s as u32 - 1) as usize;
                if self.holds(found, group, prefix, value) {
                    self.next = found + 1;
                    return Ok(());
                }
            }
            at = (at + 1) & mask;
        }
        let too_many = || {
            DataFusionError::ResourcesExhausted(
                "count(DISTINCT): more than 2^32 - 1 distinct values or a value over 4 GiB"
                    .to_string(),
            )
        };
        let index = u32::try_from(self.entries.len() + 1)
            .ok()
            .filter(|&i| i != u32::MAX)
            .ok_or_else(too_many)?;
        let len = u32::try_from(value.len()).map_err(|_| too_many())?;
        self.entries.push(Entry {
            hash,
            prefix,
            group,
            len,
            start: self.bytes.len(),
        });
        self.bytes.extend_from_slice(value);
        self.slots[at] = tag | u64::from(index);
        self.next = self.entries.len();
        Ok(())
    }

    /// Whether entry `at` (if any) is `value` (whose first bytes are `prefix`) of `group`.
    fn holds(&self, at: usize, group: u32, prefix: u64, value: &[u8]) -> bool {
        self.entries.get(at).is_some_and(|e| {
            e.prefix == prefix
                && e.group == group
                && e.len as usize == value.len()
                && self.bytes[e.start..e.start + value.len()] == *value
        })
    }

    fn value(&self, entry: usize) -> &[u8] {
        let e = &self.entries[entry];
        &self.bytes[e.start..e.start + e.len as usize]
    }

    /// The first slot to look in for `hash`: its top bits.
    fn slot(&self, hash: u64) -> usize {
        (hash >> (64 - self.slots.len().trailing_zeros())) as usize
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(1024);
        // Written, not allocated zeroed: memory fresh from the kernel that is read first
        // maps its zero page, and the first write after that costs a second fault and a
        // TLB flush on every core (`do_wp_page`: 7% of the CPU of a distinct count).
        #[allow(clippy::slow_vector_initialization)]
        let slots = {
            let mut slots = Vec::with_capacity(len);
            slots.resize(len, 0);
            slots
        };
        self.slots = slots;
        let mask = len - 1;
        for (i, e) in self.entries.iter().enumerate() {
            let mut at = (e.hash >> (64 - len.trailing_zeros())) as usize;
            while self.slots[at] != 0 {
                at = (at + 1) & mask;
            }
            // `insert` keeps the indexes below `u32::MAX`.
            self.slots[at] = (e.hash << 32) | (i as u64 + 1);
        }
    }
}

/// The first 8 bytes of `value`, zero-padded, as one number.
fn prefix(value: &[u8]) -> u64 {
    let mut first = [0_u8; 8];
    let n = value.len().min(8);
    first[..n].copy_from_slice(&value[..n]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Field;

    #[test]
    fn a_value_is_kept_once_per_group_across_growth() {
        let mut set = ByteSet::default();
        // 3,000 values, each in two groups, inserted three times: the table grows twice.
        for _ in 0..3 {
            for i in 0..3000 {
                let v = format!("{i:040x}");
                set.insert(i % 7, v.as_bytes()).expect("inserts");
                set.insert(7, v.as_bytes()).expect("inserts");
            }
        }
        // Again with each pair swapped, then backwards: found, wherever the last was.
        for i in (0..3000).map(|i| i ^ 1).chain((0..3000).rev()) {
            let v = format!("{i:040x}");
            set.insert(i % 7, v.as_bytes()).expect("inserts");
        }
        // The empty value is a value.
        set.insert(7, b"").expect("inserts");
        set.insert(7, b"").expect("inserts");
        assert_eq!(set.entries.len(), 6001);
        let item: FieldRef = Arc::new(Field::new("item", DataType::Utf8View, true));
        let state = Distinct::Bytes(set).state(9, &item).expect("state");
        let lists = state.as_list::<i32>();
        let lengths: Vec<usize> = (0..9).map(|g| lists.value(g).len()).collect();
        assert_eq!(lengths, [429, 429, 429, 429, 428, 428, 428, 3001, 0]);
        let group_3 = lists.value(3);
        let group_3 = group_3.as_string_view();
        assert!(
            group_3
                .iter()
                .flatten()
                .all(|v| { u32::from_str_radix(v, 16).is_ok_and(|i| i % 7 == 3) })
        );
    }

    #[test]
    fn the_value_where_the_last_was_followed_counts_only_in_its_group() {
        let mut set = ByteSet::default();
        let values: Vec<String> = (0..100).map(|i| format!("machine-{i:03}")).collect();
        for v in &values {
            set.insert(0, v.as_bytes()).expect("inserts");
        }
        // Every other value again in group 0, each followed by the next in group 1,
        // which the entry after the one found holds in group 0.
        for (i, v) in values.iter().enumerate() {
            set.insert((i % 2) as u32, v.as_bytes()).expect("inserts");
        }
        let item: FieldRef = Arc::new(Field::new("item", DataType::Utf8View, true));
        let state = Distinct::Bytes(set).state(2, &item).expect("state");
        let lists = state.as_list::<i32>();
        assert_eq!([lists.value(0).len(), lists.value(1).len()], [100, 50]);
    }

    #[test]
    fn scalars_come_out_as_the_lists_item_type() {
        let mut set = HashSet::with_hasher(RandomState::default());
        let day = |d: i64| {
            ScalarValue::Dictionary(
                Box::new(DataType::UInt16),
                Box::new(ScalarValue::TimestampMicrosecond(
                    Some(d * 86_400_000_000),
                    Some("UTC".into()),
                )),
            )
        };
        for (g, d) in [(0, 1), (0, 2), (2, 1), (0, 1)] {
            set.insert((g, day(d)));
        }
        let item: FieldRef = Arc::new(Field::new(
            "item",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        let state = Distinct::Scalars(set).state(3, &item).expect("state");
        let lists = state.as_list::<i32>();
        let lengths: Vec<usize> = (0..3).map(|g| lists.value(g).len()).collect();
        assert_eq!(lengths, [2, 0, 1]);
        assert_eq!(lists.values().data_type(), item.data_type());
        let empty = Distinct::new(item.data_type())
            .state(2, &item)
            .expect("state");
        assert_eq!(empty.len(), 2);
        assert_eq!(empty.as_list::<i32>().values().len(), 0);
    }
}
