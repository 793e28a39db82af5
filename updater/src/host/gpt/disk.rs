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

/// An open disk (image file or block device, or an image in memory) and its logical sector size.
pub(super) struct Disk {
    pub path: PathBuf,
    backing: Backing,
    pub sector: u64,
    pub len: u64,
}

/// Where a disk's bytes are.
enum Backing {
    /// An image file or block device.
    File(File),
    /// An image in memory ([`super::Image`]): the reader and writer as for a file, without I/O.
    Memory(std::cell::RefCell<Vec<u8>>),
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
            backing: Backing::File(file),
            sector,
            len,
        })
    }

    /// A disk over `bytes` in memory with sectors of `sector` bytes, named `path` in errors.
    pub fn memory(path: &Path, bytes: Vec<u8>, sector: u64) -> Disk {
        Disk {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            backing: Backing::Memory(std::cell::RefCell::new(bytes)),
            sector,
        }
    }

    /// A second disk over a copy of this in-memory disk's bytes, as a fresh open would see them.
    pub fn in_memory_copy(&self) -> Disk {
        let bytes = match &self.backing {
            Backing::Memory(b) => b.borrow().clone(),
            Backing::File(_) => Vec::new(),
        };
        Disk::memory(&self.path, bytes, self.sector)
    }

    /// The bytes of an in-memory disk (`None` for a file or device).
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self.backing {
            Backing::Memory(b) => Some(b.into_inner()),
            Backing::File(_) => None,
        }
    }

    /// The number of whole sectors on the disk; the last LBA is one less.
    pub fn sectors(&self) -> u64 {
        self.len / self.sector
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
        match &self.backing {
            Backing::File(file) => {
                let mut buf = vec![0; len as usize];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| GptError::io("read", &self.path, e))?;
                Ok(buf)
            }
            // In range: checked above against `len`, which is the vector's length.
            Backing::Memory(bytes) => {
                Ok(bytes.borrow()[offset as usize..][..len as usize].to_vec())
            }
        }
    }

    /// Write `bytes` at byte `offset`.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), GptError> {
        #[cfg(test)]
        WRITES.with(|w| {
            if let Some(log) = w.borrow_mut().as_mut() {
                log.push((offset, bytes.to_vec()));
            }
        });
        match &self.backing {
            Backing::File(file) => file
                .write_all_at(bytes, offset)
                .map_err(|e| GptError::io("write", &self.path, e)),
            Backing::Memory(image) => {
                let mut image = image.borrow_mut();
                let end = usize::try_from(offset)
                    .ok()
                    .and_then(|o| Some(o..o.checked_add(bytes.len())?))
                    .filter(|r| r.end <= image.len());
                // A file would grow; an image in memory refuses, so that fuzzing catches the write.
                let range = end.ok_or_else(|| {
                    GptError::io(
                        "write",
                        &self.path,
                        std::io::Error::other(format!(
                            "{} bytes at byte {offset}: past the end of the image ({} bytes)",
                            bytes.len(),
                            image.len()
                        )),
                    )
                })?;
                image[range].copy_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Flush everything written to stable storage.
    pub fn sync(&self) -> Result<(), GptError> {
        match &self.backing {
            Backing::File(file) => file
                .sync_all()
                .map_err(|e| GptError::io("fsync", &self.path, e)),
            Backing::Memory(_) => Ok(()),
        }
    }

    fn corrupt(&self, what: &'static str, problem: String) -> GptError {
        GptError::Corrupt {
            disk: self.path.clone(),
            what,
            problem,
        }
    }
}

/// Disk writes in order: (byte offset, bytes).
#[cfg(test)]
pub(super) type WriteLog = Vec<(u64, Vec<u8>)>;

#[cfg(test)]
thread_local! {
    /// When `Some`, every [`Disk::write`] of this thread is logged here, in order: the torn-write tests replay prefixes of it.
    pub(super) static WRITES: std::cell::RefCell<Option<WriteLog>> = const { std::cell::RefCell::new(None) };
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

    /// This copy's table placed at `lba` with its array at `array_lba`, pointing at `alternate`:
    /// the header's own location fields rewritten and its CRC recomputed, in memory.
    fn mirror(&self, lba: u64, array_lba: u64, alternate: u64) -> Copy {
        let mut header = self.header.clone();
        header[24..32].copy_from_slice(&lba.to_le_bytes());
        header[32..40].copy_from_slice(&alternate.to_le_bytes());
        header[72..80].copy_from_slice(&array_lba.to_le_bytes());
        let crc = header_crc(&header);
        header[HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
        Copy {
            lba,
            header,
            array_lba,
            array: self.array.clone(),
            entry_size: self.entry_size,
        }
    }

    /// Write the whole copy: the entry array first, then the header sector (zero past the
    /// header's size), so that the header only becomes valid over a whole array.
    fn write_whole(&self, disk: &Disk) -> Result<(), GptError> {
        disk.write(self.array_lba * disk.sector, &self.array)?;
        let mut sector = self.header.clone();
        sector.resize(disk.sector as usize, 0);
        disk.write(self.lba * disk.sector, &sector)
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

/// Which copy a read had to rebuild from the other, and why.
pub(super) enum Damage {
    /// The primary is valid; the backup is missing, corrupt, or stale (valid but different, as
    /// a cut between the two writes of [`Gpt::write_attributes`] leaves it).
    Backup(GptError),
    /// The primary is corrupt (a write into it cut short); the backup is valid.
    Primary(GptError),
}

/// Both copies of the GPT: `primary` holds the table in force, `backup` its mirror; when the
/// disk's copies were not both whole and equal, `damage` says which one is rebuilt in memory.
///
/// Which copy wins, as UEFI firmware, Flatcar GRUB's `gpt` module (`grub_gpt_read` then
/// `grub_gpt_repair`) and sgdisk decide it:
/// - a **valid primary** (signature, both CRCs, MyLBA) is the table, whatever the backup holds;
/// - a **corrupt primary** with a valid backup at the end of the disk: the backup is the table.
///
/// upd writes the backup first, then the primary, with an fsync after each. So a cut leaves
/// either a primary still whole and old (the change did not happen, for the boot loader and for
/// upd alike, and the rerun command makes it again), or a primary half-written and invalid
/// beside a whole new backup (the change did happen, for both), or both whole and new. Since
/// the boot loader and upd read the same copy by the same rule, the slot the boot loader picks
/// is the slot upd believes it picks.
pub(super) struct Gpt {
    pub primary: Copy,
    pub backup: Copy,
    pub damage: Option<Damage>,
}

impl Gpt {
    /// Read and check both copies; take the primary if it is valid, else the backup; refuse
    /// only when neither copy is valid. A damaged copy is rebuilt in memory (never written here).
    pub fn read(disk: &Disk) -> Result<Gpt, GptError> {
        match Copy::read(disk, 1, "primary GPT header") {
            Ok(primary) => {
                let backup = Copy::read(disk, primary.alternate_lba(), "backup GPT header")
                    .and_then(|b| agree(disk, &primary, &b).map(|()| b));
                let gpt = match backup {
                    Ok(backup) => Gpt {
                        primary,
                        backup,
                        damage: None,
                    },
                    Err(why) => {
                        let lba = primary.alternate_lba();
                        let array_lba = backup_array_lba(disk, &primary, lba)?;
                        let backup = primary.mirror(lba, array_lba, 1);
                        Gpt {
                            primary,
                            backup,
                            damage: Some(Damage::Backup(why)),
                        }
                    }
                };
                gpt.check_layout(disk, "primary GPT header")?;
                Ok(gpt)
            }
            Err(primary_bad) => {
                let last = (disk.len / disk.sector).saturating_sub(1);
                let backup = Copy::read(disk, last, "backup GPT header").map_err(|b| {
                    disk.corrupt(
                        "GPT (both copies)",
                        format!("primary: {primary_bad}; backup: {b}"),
                    )
                })?;
                if backup.alternate_lba() != 1 {
                    return Err(disk.corrupt(
                        "GPT (both copies)",
                        format!(
                            "primary: {primary_bad}; backup: does not point at a primary header at LBA 1"
                        ),
                    ));
                }
                let primary = backup.mirror(1, 2, last);
                let gpt = Gpt {
                    primary,
                    backup,
                    damage: Some(Damage::Primary(primary_bad)),
                };
                gpt.check_layout(disk, "backup GPT header")?;
                Ok(gpt)
            }
        }
    }

    /// Refuse a table whose shape does not fit the disk: the usable LBAs inside the disk, the
    /// primary header and array before them, the backup array and header after them (neither
    /// array overlapping its header), and every used entry a range `first ≤ last` inside them.
    /// `what` names the header in force. Once this holds, every LBA the table leads to is below
    /// the disk's sector count, so no byte offset (LBA × sector size) overflows, no write lands
    /// in a partition, and no partition reaches past the end of the disk.
    fn check_layout(&self, disk: &Disk, what: &'static str) -> Result<(), GptError> {
        let bad = |problem: String| Err(disk.corrupt(what, problem));
        let header = &self.primary.header;
        let (first, last) = (le64(header, 40), le64(header, 48));
        let sectors = disk.sectors();
        if first > last {
            return bad(format!(
                "first usable LBA {first} is after the last usable LBA {last}"
            ));
        }
        if last >= sectors {
            return bad(format!(
                "last usable LBA {last} is past the end of the disk ({sectors} sectors of {} bytes)",
                disk.sector
            ));
        }
        // The arrays were read from the disk or placed on it, so their ends fit in u64.
        let end = |c: &Copy| c.array_lba + (c.array.len() as u64).div_ceil(disk.sector);
        let (p, b) = (&self.primary, &self.backup);
        if p.array_lba < 2 || end(p) > first {
            return bad(format!(
                "the primary partition entry array (LBA {}..{}) is not between the primary header at LBA 1 and the first usable LBA {first}",
                p.array_lba,
                end(p)
            ));
        }
        if b.array_lba <= last || b.lba <= last || b.lba >= sectors || end(b) > sectors {
            return bad(format!(
                "the backup GPT (header at LBA {}, entry array at LBA {}..{}) is not between the last usable LBA {last} and the end of the disk ({sectors} sectors)",
                b.lba,
                b.array_lba,
                end(b)
            ));
        }
        if (b.array_lba..end(b)).contains(&b.lba) {
            return bad(format!(
                "the backup header at LBA {} lies inside its own entry array (LBA {}..{})",
                b.lba,
                b.array_lba,
                end(b)
            ));
        }
        for i in 0..p.count() {
            let Some(part) = super::Partition::parse(i, p.entry(i)) else {
                continue;
            };
            let (n, lo, hi) = (part.index, part.first_lba, part.last_lba);
            if lo > hi {
                return bad(format!(
                    "partition {n} ({:?}): first LBA {lo} is after its last LBA {hi}",
                    part.label
                ));
            }
            if lo < first || hi > last {
                return bad(format!(
                    "partition {n} ({:?}): LBAs {lo}..={hi} are outside the usable LBAs {first}..={last}",
                    part.label
                ));
            }
        }
        Ok(())
    }

    /// Rewrite the damaged copy whole from the one in force, and fsync; nothing if both are whole.
    ///
    /// Until this write completes the copy in force is untouched, so a cut here changes nothing
    /// anyone reads: a half-rebuilt backup is still not taken while the primary is valid, and a
    /// half-rebuilt primary stays invalid (its array lands before its header) until whole.
    pub fn repair(&mut self, disk: &Disk) -> Result<(), GptError> {
        let Some(damage) = self.damage.take() else {
            return Ok(());
        };
        let copy = match &damage {
            Damage::Backup(why) => {
                tracing::warn!(disk = %disk.path.display(), %why, "rewriting the backup GPT from the primary");
                &self.backup
            }
            Damage::Primary(why) => {
                tracing::warn!(disk = %disk.path.display(), %why, "rewriting the primary GPT from the backup");
                &self.primary
            }
        };
        copy.write_whole(disk)?;
        disk.sync()
    }

    /// Set entry `i`'s attributes in both copies: repair a damaged copy first, then the backup,
    /// then the primary, fsync after each (see [`Gpt`] for what a cut between them leaves).
    ///
    /// Boot loaders read the primary; while its array is half-written its CRC fails and they
    /// fall back to the backup, which is already complete, so every instant has one valid copy.
    pub fn write_attributes(
        &mut self,
        disk: &Disk,
        i: usize,
        attributes: u64,
    ) -> Result<(), GptError> {
        self.repair(disk)?;
        for copy in [&mut self.backup, &mut self.primary] {
            copy.set_attributes(i, attributes);
            copy.write_attributes(disk, i)?;
            disk.sync()?;
        }
        Ok(())
    }
}

/// The backup must point back at the primary and agree with it field for field and entry for entry.
fn agree(disk: &Disk, primary: &Copy, backup: &Copy) -> Result<(), GptError> {
    let bad = |problem: &str| Err(disk.corrupt("backup GPT header", problem.to_string()));
    if backup.alternate_lba() != primary.lba {
        return bad("does not point back at the primary header at LBA 1");
    }
    // Fields 40..72 (usable range, disk GUID) and 80..88 (entry count and size) must agree.
    if primary.header[40..72] != backup.header[40..72]
        || primary.header[80..88] != backup.header[80..88]
    {
        return bad("disagrees with the primary header");
    }
    if primary.array != backup.array {
        return bad("its partition entry array differs from the primary one");
    }
    Ok(())
}

/// Where the backup entry array goes: the sectors just before the backup header, as sgdisk
/// lays it out; refused if that is not past the last usable LBA or the header is off the disk.
fn backup_array_lba(disk: &Disk, primary: &Copy, header_lba: u64) -> Result<u64, GptError> {
    let sectors = (primary.array.len() as u64).div_ceil(disk.sector);
    let last_usable = le64(&primary.header, 48);
    let on_disk = header_lba < disk.len / disk.sector;
    match header_lba.checked_sub(sectors) {
        Some(lba) if on_disk && lba > last_usable => Ok(lba),
        _ => Err(disk.corrupt(
            "primary GPT header",
            format!("no room for a backup GPT at LBA {header_lba} after the last usable LBA {last_usable}"),
        )),
    }
}
