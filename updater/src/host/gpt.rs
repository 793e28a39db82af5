//! The A/B OS slots on disk: GPT partitions found by label, and their gptprio boot attributes read and written in place.
//!
//! Written by hand over `crc32fast` rather than with the `gpt` crate: that crate re-serialises
//! the whole header and entry array from its structs when it writes (dropping header bytes past
//! 92 and re-encoding every entry), while upd must change exactly one 8-byte attribute field and
//! the CRCs, in both copies, and leave every other byte of the disk as it was. Reading checks
//! both headers and both arrays (signature, CRCs, location, agreement); a valid primary is the
//! table, else a valid backup (as boot loaders and sgdisk decide: see `disk::Gpt`); the damaged
//! copy is rewritten from the other before any write, and with neither copy valid upd refuses.

mod disk;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod torn;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::rules::gptprio::{boot_choice, Prio};

use disk::{le64, Damage, Disk, Gpt};

/// Why the GPT of a disk could not be read or written; every variant names the disk.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// An I/O call on the disk failed.
    #[error("{op} {disk}: {source}")]
    Io {
        /// What was being done ("open", "read", "fsync", ...).
        op: &'static str,
        /// The disk (image file or block device).
        disk: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A header or entry array is damaged or inconsistent; nothing was written.
    #[error("{what} of {disk} is corrupt: {problem}")]
    Corrupt {
        /// The disk.
        disk: PathBuf,
        /// Which structure ("primary GPT header", "backup GPT header").
        what: &'static str,
        /// What is wrong, with the expected and actual values.
        problem: String,
    },
    /// No used partition entry has this number.
    #[error("{disk} has no partition {index} (the GPT has {count} entries)")]
    NoPartition {
        /// The disk.
        disk: PathBuf,
        /// The 1-based partition number asked for.
        index: u32,
        /// How many entries the table has room for.
        count: usize,
    },
    /// After the write, reading the disk back did not show the new attributes.
    #[error("{disk}: partition {index} reads back attributes {actual:#018x} after writing {expected:#018x}")]
    NotWritten {
        /// The disk.
        disk: PathBuf,
        /// The 1-based partition number.
        index: u32,
        /// The attributes written.
        expected: u64,
        /// The attributes read back.
        actual: u64,
    },
}

impl GptError {
    fn io(op: &'static str, disk: &Path, source: std::io::Error) -> Self {
        GptError::Io {
            op,
            disk: disk.to_path_buf(),
            source,
        }
    }
}

/// One used GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based entry number, as sgdisk and the kernel (`/dev/loop0p1`) count.
    pub index: u32,
    /// The partition name (label), e.g. "USR-A".
    pub label: String,
    /// The unique partition GUID, lower-case 8-4-4-4-12.
    pub part_uuid: String,
    /// The partition type GUID, lower-case 8-4-4-4-12.
    pub type_uuid: String,
    /// First sector (inclusive).
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// The 64-bit attribute field, gptprio bits included.
    pub attributes: u64,
}

impl Partition {
    /// Byte offset of the partition on the disk, for sectors of `sector` bytes; `None` if it
    /// does not fit in a u64 (never for a partition of a [`Table`] read with its sector size).
    pub fn offset(&self, sector: u64) -> Option<u64> {
        self.first_lba.checked_mul(sector)
    }

    /// Size of the partition in bytes, for sectors of `sector` bytes; `None` if its last LBA is
    /// before its first or the size does not fit in a u64 (never for a partition of a [`Table`]
    /// read with its sector size).
    pub fn size(&self, sector: u64) -> Option<u64> {
        self.last_lba
            .checked_sub(self.first_lba)?
            .checked_add(1)?
            .checked_mul(sector)
    }

    /// The gptprio fields of its attributes.
    pub fn prio(&self) -> Prio {
        Prio::from_attributes(self.attributes)
    }

    /// Parse entry `i` (0-based); `None` for an unused entry (type GUID all zero).
    fn parse(i: usize, entry: &[u8]) -> Option<Partition> {
        if entry[..16].iter().all(|&b| b == 0) {
            return None;
        }
        let name: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(Partition {
            index: u32::try_from(i + 1).ok()?,
            label: String::from_utf16_lossy(&name),
            part_uuid: guid(&entry[16..32]),
            type_uuid: guid(&entry[..16]),
            first_lba: le64(entry, 32),
            last_lba: le64(entry, 40),
            attributes: le64(entry, 48),
        })
    }
}

/// Format a GPT GUID: the first three fields are little-endian, the last two big-endian.
fn guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        hex::encode(&b[10..16])
    )
}

/// The partition table of one disk, as read and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// The disk it was read from.
    pub disk: PathBuf,
    /// Logical sector size in bytes (512 for image files; the kernel's for block devices).
    pub sector_size: u64,
    /// The used entries, in entry order.
    pub partitions: Vec<Partition>,
}

impl Table {
    /// Read and check both GPT copies of `disk` (image file or block device): the table in
    /// force is the primary if valid, else the backup; a damaged copy is left for the next write
    /// to repair.
    pub fn read(disk: &Path) -> Result<Table, GptError> {
        let disk = Disk::open(disk, false)?;
        let gpt = Gpt::read(&disk)?;
        match &gpt.damage {
            Some(Damage::Backup(why)) => {
                tracing::warn!(%why, "using the primary GPT; the backup is rewritten at the next write");
            }
            Some(Damage::Primary(why)) => {
                tracing::warn!(%why, "using the backup GPT; the primary is rewritten at the next write");
            }
            None => {}
        }
        Ok(Table::from_gpt(&disk, &gpt))
    }

    fn from_gpt(disk: &Disk, gpt: &Gpt) -> Table {
        let p = &gpt.primary;
        Table {
            disk: disk.path.clone(),
            sector_size: disk.sector,
            partitions: (0..p.count())
                .filter_map(|i| Partition::parse(i, p.entry(i)))
                .collect(),
        }
    }

    /// The first partition named `label` (exact match).
    pub fn by_label(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    /// The partition whose unique GUID is `uuid` (case-insensitive).
    pub fn by_uuid(&self, uuid: &str) -> Option<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.part_uuid.eq_ignore_ascii_case(uuid))
    }
}

/// Set the attribute field of partition `index` (1-based) to `attributes`: re-reads and checks both GPT copies, repairs a damaged one, writes both, fsyncs, reads back.
pub fn write_attributes(disk: &Path, index: u32, attributes: u64) -> Result<(), GptError> {
    update_attributes(disk, index, |_| attributes).map(|_| ())
}

/// Set only the gptprio bits of partition `index` (1-based), keeping all other attribute bits; returns the new attributes.
pub fn write_prio(disk: &Path, index: u32, prio: Prio) -> Result<u64, GptError> {
    update_attributes(disk, index, |old| prio.apply(old))
}

/// A disk image held in memory, read and written by the same code as an image file or block
/// device (with `sector`-byte sectors); for tests and fuzzing. A write past its end is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The whole disk, LBA 0 first.
    pub bytes: Vec<u8>,
    /// Logical sector size in bytes (512 or 4096).
    pub sector: u64,
}

impl Image {
    /// The name an image in memory has in errors and in [`Table::disk`].
    pub const PATH: &'static str = "<disk image in memory>";

    /// [`Table::read`] of the image.
    pub fn table(&self) -> Result<Table, GptError> {
        let disk = Disk::memory(Path::new(Self::PATH), self.bytes.clone(), self.sector);
        let gpt = Gpt::read(&disk)?;
        Ok(Table::from_gpt(&disk, &gpt))
    }

    /// [`write_attributes`] on the image: on an error it holds what was written before it.
    pub fn write_attributes(&mut self, index: u32, attributes: u64) -> Result<(), GptError> {
        let disk = Disk::memory(
            Path::new(Self::PATH),
            std::mem::take(&mut self.bytes),
            self.sector,
        );
        let done = update_on(&disk, index, |_| attributes, |d| Ok(d.in_memory_copy()));
        self.bytes = disk.into_bytes().unwrap_or_default();
        done.map(|_| ())
    }
}

/// Read-modify-write of one entry's attributes under a single open of the disk.
fn update_attributes(
    path: &Path,
    index: u32,
    change: impl FnOnce(u64) -> u64,
) -> Result<u64, GptError> {
    let disk = Disk::open(path, true)?;
    update_on(&disk, index, change, |_| Disk::open(path, false))
}

/// Read-modify-write of one entry's attributes on `disk`, then a read back through `reopen`.
fn update_on(
    disk: &Disk,
    index: u32,
    change: impl FnOnce(u64) -> u64,
    reopen: impl FnOnce(&Disk) -> Result<Disk, GptError>,
) -> Result<u64, GptError> {
    let path = &disk.path;
    let mut gpt = Gpt::read(disk)?;
    let count = gpt.primary.count();
    let no_partition = || GptError::NoPartition {
        disk: path.clone(),
        index,
        count,
    };
    let i = usize::try_from(index)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|&i| i < count)
        .ok_or_else(no_partition)?;
    let old = Partition::parse(i, gpt.primary.entry(i)).ok_or_else(no_partition)?;
    let new = change(old.attributes);
    if new == old.attributes {
        // Nothing to change, but a damaged copy is still made whole again.
        gpt.repair(disk)?;
        return Ok(new);
    }
    gpt.write_attributes(disk, i, new)?;
    // Read back through a fresh open: both copies whole and equal again.
    let disk = reopen(disk)?;
    let back = Gpt::read(&disk)?;
    if let Some(Damage::Backup(why) | Damage::Primary(why)) = back.damage {
        return Err(why);
    }
    let actual = Table::from_gpt(&disk, &back)
        .partitions
        .into_iter()
        .find(|p| p.index == index)
        .map_or(0, |p| p.attributes);
    if actual != new {
        return Err(GptError::NotWritten {
            disk: path.clone(),
            index,
            expected: new,
            actual,
        });
    }
    Ok(new)
}
