//! The on-disk GPT: both headers and both partition entry arrays, read, checked and patched in place (UEFI spec §5.3).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::GptError;

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The header fields defined by UEFI 2.x end at byte 92; a header may declare more (reserved, zero).
const MIN_HEADER_SIZE: usize = 92;
const MIN_ENTRY_SIZE: usize = 128;
/// Far above any real table (128 × 128 bytes is the norm), low enough to refuse garbage sizes.
const MAX_ARRAY_BYTES: u64 = 16 << 20;
/// Byte range of the header CRC32 field, and of the entry-array CRC32 field, in a header.
pub(super) const HEADER_CRC: std::ops::Range<usize> = 16..20;
pub(super) const ARRAY_CRC: std::ops::Range<usize> = 88..92;
/// Byte range of the attribute field in a partition entry.
pub(super) const ENTRY_ATTRIBUTES: std::ops::Range<usize> = 48..56;

/// An open disk (image file or block device) and its logical sector size.
pub(super) struct Disk {
    pub path: PathBuf,
    pub file: File,
    pub sector: u64,
    pub len: u64,
}

impl Disk {
    /// Open `path` (read-only unless `write`) and learn its sector size and length.
    pub fn open(path: &Path, write: bool) -> Result<Disk, GptError> {
        let io = |op| move |source| GptError::io(op, path, source);
        let mut file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(io("open"))?;
        let meta = file.metadata().map_err(io("stat"))?;
        let sector = if meta.file_type().is_block_device() {
            block_sector_size(&file).map_err(io("ask the sector size (BLKSSZGET) of"))?
        } else {
            512
        };
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(io("seek to the end of"))?;
        Ok(Disk {
            path: path.to_path_buf(),
            file,
            sector,
            len,
        })
    }

    /// `len` bytes from the start of sector `lba`, refusing a range past the end of the disk.
    pub fn read(&self, lba: u64, len: u64, what: &'static str) -> Result<Vec<u8>, GptError> {
        let offset = lba.checked_mul(self.sector);
        let inside = match offset.and_then(|o| o.checked_add(len)) {
            Some(end) => end <= self.len,
            None => false,
        };
        let Some(offset) = offset.filter(|_| inside) else {
            return Err(self.corrupt(
                what,
                format!(
                    "lies at LBA {lba} (+{len} bytes), past the end of the disk ({} bytes)",
                    self.len
                ),
            ));
        };
        let mut buf = vec![0; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| GptError::io("read", &self.path, e))?;
        Ok(buf)
    }

    /// Write `bytes` at byte `offset`.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), GptError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| GptError::io("write", &self.path, e))
    }

    /// Flush everything written to stable storage.
    pub fn sync(&self) -> Result<(), GptError> {
        self.file
            .sync_all()
            .map_err(|e| GptError::io("fsync", &self.path, e))
    }

    fn corrupt(&self, what: &'static str, problem: String) -> GptError {
        GptError::Corrupt {
            disk: self.path.clone(),
            what,
            problem,
        }
    }
}

/// The logical sector size the kernel uses for a block device.
#[allow(unsafe_code)] // the one ioctl without a safe wrapper in nix or rustix
fn block_sector_size(file: &File) -> std::io::Result<u64> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET stores one int through the pointer, which points at `size`; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::BLKSSZGET, &mut size) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    u64::try_from(size).map_err(|_| std::io::Error::other(format!("sector size {size}")))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The CRC32 of a header's bytes with its own CRC field taken as zero.
fn header_crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..HEADER_CRC.start]);
    h.update(&[0; 4]);
    h.update(&bytes[HEADER_CRC.end..]);
    h.finalize()
}

/// One GPT header (its `header_size` bytes as on disk) with the entry array it describes.
pub(super) struct Copy {
    /// Where the header sits (1 for the primary).
    pub lba: u64,
    pub header: Vec<u8>,
    pub array_lba: u64,
    pub array: Vec<u8>,
    pub entry_size: usize,
}

impl Copy {
    /// Read and check the header at `lba` and its entry array: steps 1–5 of the spec's validity test.
    pub fn read(disk: &Disk, lba: u64, what: &'static str) -> Result<Copy, GptError> {
        let sector = disk.read(lba, disk.sector, what)?;
        let bad = |problem: String| disk.corrupt(what, problem);
        // 1. The signature.
        if &sector[..8] != SIGNATURE {
            return Err(bad(format!("no \"EFI PART\" signature at LBA {lba}")));
        }
        // 2. The header size, then the header CRC32 over exactly that many bytes.
        let size = le32(&sector, 12) as usize;
        if !(MIN_HEADER_SIZE..=sector.len()).contains(&size) {
            return Err(bad(format!("header size {size} is out of range")));
        }
        let header = sector[..size].to_vec();
        let (stored, computed) = (le32(&header, HEADER_CRC.start), header_crc(&header));
        if stored != computed {
            return Err(bad(format!(
                "header CRC32 is {stored:#010x}, computed {computed:#010x}"
            )));
        }
        // 3. MyLBA must be where we found it.
        if le64(&header, 24) != lba {
            return Err(bad(format!(
                "says it is at LBA {}, found at LBA {lba}",
                le64(&header, 24)
            )));
        }
        // 4. A sane entry array shape.
        let (count, entry_size) = (u64::from(le32(&header, 80)), le32(&header, 84) as usize);
        if entry_size < MIN_ENTRY_SIZE || entry_size % 8 != 0 {
            return Err(bad(format!("partition entry size {entry_size}")));
        }
        let array_len = count * entry_size as u64;
        if array_len > MAX_ARRAY_BYTES {
            return Err(bad(format!("{count} entries of {entry_size} bytes")));
        }
        // 5. The entry array CRC32.
        let array_lba = le64(&header, 72);
        let array = disk.read(array_lba, array_len, what)?;
        let (stored, computed) = (le32(&header, ARRAY_CRC.start), crc32fast::hash(&array));
        if stored != computed {
            return Err(bad(format!(
                "partition entry array CRC32 is {stored:#010x}, computed {computed:#010x}"
            )));
        }
        Ok(Copy {
            lba,
            header,
            array_lba,
            array,
            entry_size,
        })
    }

    /// The LBA of the other header.
    pub fn alternate_lba(&self) -> u64 {
        le64(&self.header, 32)
    }

    /// The raw bytes of entry `i` (0-based).
    pub fn entry(&self, i: usize) -> &[u8] {
        &self.array[i * self.entry_size..(i + 1) * self.entry_size]
    }

    /// Number of entries in the array.
    pub fn count(&self) -> usize {
        self.array.len() / self.entry_size
    }

    /// Set entry `i`'s attribute field and recompute both CRCs, in memory.
    fn set_attributes(&mut self, i: usize, attributes: u64) {
        let at = i * self.entry_size + ENTRY_ATTRIBUTES.start;
        self.array[at..at + 8].copy_from_slice(&attributes.to_le_bytes());
        let array_crc = crc32fast::hash(&self.array);
        self.header[ARRAY_CRC].copy_from_slice(&array_crc.to_le_bytes());
        let crc = header_crc(&self.header);
        self.header[HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
    }

    /// Write only the bytes `set_attributes` changed: the attribute field and the two CRC fields.
    fn write_attributes(&self, disk: &Disk, i: usize) -> Result<(), GptError> {
        let entry_at = i * self.entry_size + ENTRY_ATTRIBUTES.start;
        let array_off = self.array_lba * disk.sector;
        let header_off = self.lba * disk.sector;
        disk.write(
            array_off + entry_at as u64,
            &self.array[entry_at..entry_at + 8],
        )?;
        disk.write(header_off + ARRAY_CRC.start as u64, &self.header[ARRAY_CRC])?;
        disk.write(
            header_off + HEADER_CRC.start as u64,
            &self.header[HEADER_CRC],
        )
    }
}

/// Both copies of the GPT, checked against each other.
pub(super) struct Gpt {
    pub primary: Copy,
    pub backup: Copy,
}

impl Gpt {
    /// Read and check both copies; refuse any corruption or disagreement between them.
    pub fn read(disk: &Disk) -> Result<Gpt, GptError> {
        let primary = Copy::read(disk, 1, "primary GPT header")?;
        let backup = Copy::read(disk, primary.alternate_lba(), "backup GPT header")?;
        let bad = |problem: &str| disk.corrupt("backup GPT header", problem.to_string());
        if backup.alternate_lba() != primary.lba {
            return Err(bad("does not point back at the primary header at LBA 1"));
        }
        // Fields 40..72 (usable range, disk GUID) and 80..88 (entry count and size) must agree.
        if primary.header[40..72] != backup.header[40..72]
            || primary.header[80..88] != backup.header[80..88]
        {
            return Err(bad("disagrees with the primary header"));
        }
        if primary.array != backup.array {
            return Err(bad(
                "its partition entry array differs from the primary one",
            ));
        }
        Ok(Gpt { primary, backup })
    }

    /// Set entry `i`'s attributes in both copies: backup first, then primary, fsync after each.
    ///
    /// Boot loaders read the primary; while its array is half-written its CRC fails and they
    /// fall back to the backup, which is already complete, so every instant has one valid copy.
    pub fn write_attributes(
        &mut self,
        disk: &Disk,
        i: usize,
        attributes: u64,
    ) -> Result<(), GptError> {
        for copy in [&mut self.backup, &mut self.primary] {
            copy.set_attributes(i, attributes);
            copy.write_attributes(disk, i)?;
            disk.sync()?;
        }
        Ok(())
    }
}
