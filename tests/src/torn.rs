//! Torn writes, replayed from the real binary: the file-system calls a command makes, captured with
//! `strace -f -y -xx`, and each prefix of them applied to a copy of the tree it ran on, as a power
//! cut can leave that tree.
//!
//! The model is the pessimistic one of POSIX (and of ext4 without its ordering extras): a file's
//! data is on disk only up to its last `fsync`/`fdatasync`, and a directory's entries (a create,
//! rename, unlink, symlink, mkdir in it) only up to the last fsync of that directory. After the
//! first `k` calls a power cut may leave any of these [`Cut`]s:
//! - everything the calls did (the page cache was flushed just in time, as after a SIGKILL);
//! - the entries as the calls left them, but each file's data written since its last fsync lost,
//!   or half of it there (a partially written file);
//! - the directories too as of their last fsync, with the file data lost or half there.
//!
//! Paths under `ROOT/run`, `ROOT/usr`, `ROOT/opt` and `ROOT/proc` are not the disk's and are left
//! out, as is everything outside ROOT.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The calls traced: everything that creates, writes, syncs, renames or removes a file.
pub const TRACED: &str =
    "openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,ftruncate,\
                          fsync,fdatasync,syncfs,rename,renameat,renameat2,unlink,unlinkat,symlink,\
                          symlinkat,mkdir,mkdirat,close";

/// One file-system call, as far as the disk is concerned (paths relative to ROOT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `open` with `O_CREAT` (`trunc`: and `O_TRUNC`), or `O_TRUNC` alone, of a file at `path`, as fd `fd`.
    Open {
        /// The fd returned.
        fd: i32,
        /// The file.
        path: PathBuf,
        /// Created if missing.
        create: bool,
        /// Truncated.
        trunc: bool,
    },
    /// `data` written through `fd` at `at` (`None`: at the fd's offset).
    Write {
        /// The fd.
        fd: i32,
        /// The file, as strace showed the fd.
        path: PathBuf,
        /// pwrite's offset.
        at: Option<u64>,
        /// The bytes written (as many as the call returned).
        data: Vec<u8>,
    },
    /// `lseek` moved fd `fd` to `to`.
    Seek {
        /// The fd.
        fd: i32,
        /// The offset lseek returned.
        to: u64,
    },
    /// `ftruncate` of `path` to `len`.
    Truncate {
        /// The file.
        path: PathBuf,
        /// Its new length.
        len: u64,
    },
    /// `fsync` / `fdatasync` of a file or a directory.
    Sync {
        /// What was synced.
        path: PathBuf,
    },
    /// `rename` of `from` over `to`.
    Rename {
        /// Old name.
        from: PathBuf,
        /// New name.
        to: PathBuf,
    },
    /// `unlink`, or `rmdir` by `unlinkat(AT_REMOVEDIR)`.
    Unlink {
        /// The name removed.
        path: PathBuf,
    },
    /// `symlink` creating `path` pointing at `target`.
    Symlink {
        /// The link's text.
        target: PathBuf,
        /// The link.
        path: PathBuf,
    },
    /// `mkdir`.
    Mkdir {
        /// The directory.
        path: PathBuf,
    },
    /// `close` of fd `fd`.
    Close {
        /// The fd.
        fd: i32,
    },
}

/// Run `cmd` (whose file-system root is `root`) under strace, returning its output and the calls it
/// made on ROOT's disk, in the order they completed.
pub fn capture(cmd: &Command, root: &Path, log: &Path) -> (std::process::Output, Vec<Op>) {
    let mut st = Command::new("strace");
    st.args([
        "-f",
        "-qq",
        "-y",
        "-xx",
        "-s",
        "16777216",
        "--seccomp-bpf",
        "-o",
    ])
    .arg(log)
    .arg("-e")
    .arg(format!("trace={TRACED}"))
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    let out = st
        .output()
        .expect("run strace (scripts/prereqs installs it)");
    let text = fs::read_to_string(log).expect("read strace log");
    (out, parse(&text, root))
}

/// The calls of an `strace -f -y -xx` log that touch ROOT's disk.
pub fn parse(log: &str, root: &Path) -> Vec<Op> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut ops = Vec::new();
    for line in log.lines() {
        let Some((tid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        let whole = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(tid.to_string(), head.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let Some(head) = pending.remove(tid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        if let Some(op) = parse_call(&whole, root) {
            ops.push(op);
        }
    }
    ops
}

/// Decode strace's `\xNN` escapes.
fn unhex(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            let h = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("00");
            out.push(u8::from_str_radix(h, 16).unwrap_or(0));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The arguments of a call line, split at top-level commas, and its result (after ` = `).
fn split_call(line: &str) -> Option<(&str, Vec<&str>, &str)> {
    let open = line.find('(')?;
    let name = &line[..open];
    // strace pads the result of a resumed call to a column: `<... openat resumed>)      = 12`.
    let eq = line.rfind(" = ")?;
    let close = line[..eq].trim_end().strip_suffix(')')?.len();
    let args_text = &line[open + 1..close];
    let result = line[eq + 3..].trim();
    let mut args = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in args_text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' | '[' | '{' if !quoted => depth += 1,
            '>' | ']' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                args.push(args_text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(args_text[start..].trim());
    Some((name, args, result))
}

/// `3</path>` → (3, /path); `AT_FDCWD</path>` → (-100, /path).
fn fd_arg(a: &str) -> Option<(i32, PathBuf)> {
    let (n, p) = a.split_once('<')?;
    let fd = if n == "AT_FDCWD" {
        -100
    } else {
        n.parse().ok()?
    };
    let p = p.strip_suffix('>')?;
    Some((
        fd,
        PathBuf::from(String::from_utf8_lossy(&unhex(p)).into_owned()),
    ))
}

/// `"\x2f..."` → the path; relative paths are taken against `dir`.
fn path_arg(a: &str, dir: Option<&Path>) -> Option<PathBuf> {
    let p = a.strip_prefix('"')?.strip_suffix('"')?;
    let p = PathBuf::from(String::from_utf8_lossy(&unhex(p)).into_owned());
    if p.is_absolute() {
        Some(p)
    } else {
        dir.map(|d| d.join(p))
    }
}

/// `path` relative to ROOT, if it is on ROOT's disk.
fn on_disk(path: &Path, root: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    if rel
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return None; // `ROOT/../shadow/...`: the test's sysext wrapper, beside ROOT, not in it
    }
    let first = rel.components().next()?;
    let volatile = ["run", "usr", "opt", "proc"];
    if volatile.iter().any(|v| first.as_os_str() == *v) {
        return None;
    }
    Some(rel.to_path_buf())
}

fn parse_call(line: &str, root: &Path) -> Option<Op> {
    let (name, args, result) = split_call(line)?;
    if result.starts_with('-') || result.starts_with('?') {
        return None; // failed: changed nothing
    }
    let disk = |p: &Path| on_disk(p, root);
    let at_path = |dir: &str, p: &str| {
        let d = fd_arg(dir).map(|(_, d)| d);
        path_arg(p, d.as_deref())
    };
    match name {
        "openat" | "open" | "creat" => {
            let (path, flags) = match name {
                "openat" => (
                    at_path(args[0], args[1])?,
                    args.get(2).copied().unwrap_or(""),
                ),
                "open" => (path_arg(args[0], None)?, args.get(1).copied().unwrap_or("")),
                _ => (path_arg(args[0], None)?, "O_CREAT|O_TRUNC"),
            };
            let (fd, _) = fd_arg(result)?;
            let (create, trunc) = (flags.contains("O_CREAT"), flags.contains("O_TRUNC"));
            if !create && !trunc {
                // Opened for reading or writing in place: still track the fd for its writes.
                let writing = flags.contains("O_WRONLY") || flags.contains("O_RDWR");
                if !writing {
                    return None;
                }
            }
            Some(Op::Open {
                fd,
                path: disk(&path)?,
                create,
                trunc,
            })
        }
        "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" => {
            let (fd, path) = fd_arg(args[0])?;
            let path = disk(&path)?;
            let n: usize = result.split_whitespace().next()?.parse().ok()?;
            let mut data = Vec::new();
            if name.contains('v') {
                // [{iov_base="...", iov_len=N}, ...]
                for part in args[1].split("iov_base=").skip(1) {
                    let s = part.split_once('"').map_or("", |(_, r)| r);
                    let s = s.split_once('"').map_or("", |(q, _)| q);
                    data.extend(unhex(s));
                }
            } else {
                data = unhex(args[1].trim_matches('"'));
            }
            data.truncate(n);
            let at = match name {
                "pwrite64" => args.get(3).and_then(|a| a.parse().ok()),
                "pwritev" | "pwritev2" => args.get(3).and_then(|a| a.parse().ok()),
                _ => None,
            };
            Some(Op::Write { fd, path, at, data })
        }
        "lseek" => {
            let (fd, path) = fd_arg(args[0])?;
            disk(&path)?;
            Some(Op::Seek {
                fd,
                to: result.split_whitespace().next()?.parse().ok()?,
            })
        }
        "ftruncate" => {
            let (_, path) = fd_arg(args[0])?;
            Some(Op::Truncate {
                path: disk(&path)?,
                len: args[1].parse().ok()?,
            })
        }
        "fsync" | "fdatasync" => {
            let (_, path) = fd_arg(args[0])?;
            Some(Op::Sync { path: disk(&path)? })
        }
        "rename" | "renameat" | "renameat2" => {
            let (from, to) = if name == "rename" {
                (path_arg(args[0], None)?, path_arg(args[1], None)?)
            } else {
                (at_path(args[0], args[1])?, at_path(args[2], args[3])?)
            };
            Some(Op::Rename {
                from: disk(&from)?,
                to: disk(&to)?,
            })
        }
        "unlink" | "unlinkat" => {
            let path = if name == "unlink" {
                path_arg(args[0], None)?
            } else {
                at_path(args[0], args[1])?
            };
            Some(Op::Unlink { path: disk(&path)? })
        }
        "symlink" | "symlinkat" => {
            let target = PathBuf::from(
                String::from_utf8_lossy(&unhex(args[0].trim_matches('"'))).into_owned(),
            );
            let path = if name == "symlink" {
                path_arg(args[1], None)?
            } else {
                at_path(args[1], args[2])?
            };
            Some(Op::Symlink {
                target,
                path: disk(&path)?,
            })
        }
        "mkdir" | "mkdirat" => {
            let path = if name == "mkdir" {
                path_arg(args[0], None)?
            } else {
                at_path(args[0], args[1])?
            };
            Some(Op::Mkdir { path: disk(&path)? })
        }
        "close" => {
            let (fd, path) = fd_arg(args[0])?;
            disk(&path)?;
            Some(Op::Close { fd })
        }
        _ => None,
    }
}

/// What a power cut leaves of files' data written since their last fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    /// All of it.
    Written,
    /// Half of the bytes past the synced length (a file written part way).
    Half,
    /// None: the data as of the last fsync (empty for a file created since).
    Synced,
}

/// What a power cut leaves of directory entries changed since their directory's last fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entries {
    /// All of them.
    Made,
    /// None: each directory as of its last fsync.
    Synced,
}

/// One state a power cut can leave: the first `calls` calls made, with `data` and `entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cut {
    /// How many of the calls were made.
    pub calls: usize,
    /// What is left of unsynced data.
    pub data: Data,
    /// What is left of unsynced directory entries.
    pub entries: Entries,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    File,
    Link(PathBuf),
    Dir,
}

#[derive(Debug, Clone)]
struct Inode {
    kind: Kind,
    written: Vec<u8>,
    synced: Vec<u8>,
}

/// The tree after some calls: what each path names (`None`: nothing), in the two views.
#[derive(Debug, Clone, Default)]
struct Model {
    inodes: Vec<Inode>,
    made: BTreeMap<PathBuf, Option<usize>>,
    synced: BTreeMap<PathBuf, Option<usize>>,
    fds: HashMap<i32, (usize, u64)>,
}

/// A file's content as a cut leaves it (`None`: absent); symlinks as `-> target`, dirs as `/`.
pub type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

impl Model {
    /// The inode at `path` in the made view, loading it from `base` on first touch.
    fn at(&mut self, base: &Path, path: &Path) -> Option<usize> {
        if let Some(id) = self.made.get(path) {
            return *id;
        }
        let full = base.join(path);
        let meta = fs::symlink_metadata(&full).ok();
        let id = meta.map(|m| {
            let kind = if m.is_symlink() {
                Kind::Link(fs::read_link(&full).unwrap())
            } else if m.is_dir() {
                Kind::Dir
            } else {
                Kind::File
            };
            let bytes = if kind == Kind::File {
                fs::read(&full).unwrap()
            } else {
                Vec::new()
            };
            self.inodes.push(Inode {
                kind,
                written: bytes.clone(),
                synced: bytes,
            });
            self.inodes.len() - 1
        });
        self.made.insert(path.to_path_buf(), id);
        self.synced.entry(path.to_path_buf()).or_insert(id);
        id
    }

    fn new_inode(&mut self, kind: Kind) -> usize {
        self.inodes.push(Inode {
            kind,
            written: Vec::new(),
            synced: Vec::new(),
        });
        self.inodes.len() - 1
    }

    /// Name `path` `id` in the made view (the synced view keeps what it had).
    fn link(&mut self, base: &Path, path: &Path, id: Option<usize>) {
        self.at(base, path);
        self.made.insert(path.to_path_buf(), id);
    }

    fn apply(&mut self, base: &Path, op: &Op) {
        match op {
            Op::Open {
                fd,
                path,
                create,
                trunc,
            } => {
                let id = match self.at(base, path) {
                    Some(id) => id,
                    None if *create => {
                        let id = self.new_inode(Kind::File);
                        self.link(base, path, Some(id));
                        id
                    }
                    None => return,
                };
                if *trunc {
                    self.inodes[id].written.clear();
                }
                self.fds.insert(*fd, (id, 0));
            }
            Op::Write { fd, path, at, data } => {
                let (id, off) = match self.fds.get(fd) {
                    Some(&(id, off)) => (id, off),
                    None => match self.at(base, path) {
                        Some(id) => (id, self.inodes[id].written.len() as u64),
                        None => return,
                    },
                };
                let start = at.unwrap_or(off) as usize;
                let w = &mut self.inodes[id].written;
                if w.len() < start + data.len() {
                    w.resize(start + data.len(), 0);
                }
                w[start..start + data.len()].copy_from_slice(data);
                if at.is_none() {
                    self.fds.insert(*fd, (id, (start + data.len()) as u64));
                }
            }
            Op::Seek { fd, to } => {
                if let Some(e) = self.fds.get_mut(fd) {
                    e.1 = *to;
                }
            }
            Op::Truncate { path, len } => {
                if let Some(id) = self.at(base, path) {
                    self.inodes[id].written.resize(*len as usize, 0);
                }
            }
            Op::Sync { path } => {
                let Some(id) = self.at(base, path) else {
                    return;
                };
                if self.inodes[id].kind == Kind::Dir {
                    let children: Vec<(PathBuf, Option<usize>)> = self
                        .made
                        .iter()
                        .filter(|(p, _)| p.parent() == Some(path.as_path()))
                        .map(|(p, id)| (p.clone(), *id))
                        .collect();
                    self.synced.extend(children);
                } else {
                    let ino = &mut self.inodes[id];
                    ino.synced = ino.written.clone();
                }
            }
            Op::Rename { from, to } => {
                let id = self.at(base, from);
                self.at(base, to);
                self.made.insert(from.clone(), None);
                self.made.insert(to.clone(), id);
            }
            Op::Unlink { path } => self.link(base, path, None),
            Op::Symlink { target, path } => {
                let id = self.new_inode(Kind::Link(target.clone()));
                self.link(base, path, Some(id));
            }
            Op::Mkdir { path } => {
                let id = self.new_inode(Kind::Dir);
                self.link(base, path, Some(id));
            }
            Op::Close { fd } => {
                self.fds.remove(fd);
            }
        }
    }

    /// What `cut` leaves of every path the calls touched.
    fn tree(&self, data: Data, entries: Entries) -> Tree {
        let view = match entries {
            Entries::Made => &self.made,
            Entries::Synced => &self.synced,
        };
        let mut out = Tree::new();
        for (path, id) in view {
            // A path whose parent directory the calls made is there only if that parent is.
            let orphan = path
                .ancestors()
                .skip(1)
                .any(|a| matches!(view.get(a), Some(None)));
            let content = id.filter(|_| !orphan).map(|id| {
                let ino = &self.inodes[id];
                match &ino.kind {
                    Kind::Dir => b"/".to_vec(),
                    Kind::Link(t) => format!("-> {}", t.display()).into_bytes(),
                    Kind::File => match data {
                        Data::Written => ino.written.clone(),
                        Data::Synced => ino.synced.clone(),
                        Data::Half => {
                            // The bytes both share, then half of the rest that was written.
                            let (w, s) = (&ino.written, &ino.synced);
                            let same = w.iter().zip(s).take_while(|(a, b)| a == b).count();
                            w[..same + (w.len() - same) / 2].to_vec()
                        }
                    },
                }
            });
            out.insert(path.clone(), content);
        }
        out
    }
}

/// The calls of one command and the tree they ran on.
pub struct Replay {
    base: PathBuf,
    ops: Vec<Op>,
}

impl Replay {
    /// Calls `ops` made on a tree that was at `base` before them (a copy of ROOT).
    pub fn new(base: &Path, ops: Vec<Op>) -> Replay {
        Replay {
            base: base.to_path_buf(),
            ops,
        }
    }

    /// The calls.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The cuts worth trying: after each call except inside a run of writes to one fd (there after
    /// its first write only), each with every (data, entries) pair; the tree each leaves.
    pub fn cuts(&self) -> Vec<(Cut, Tree)> {
        let mut model = Model::default();
        let mut out = Vec::new();
        for calls in 0..=self.ops.len() {
            if calls > 0 {
                model.apply(&self.base, &self.ops[calls - 1]);
            }
            let in_run = calls >= 2
                && calls < self.ops.len()
                && matches!((&self.ops[calls - 2], &self.ops[calls - 1], &self.ops[calls]),
                    (Op::Write { fd: a, .. }, Op::Write { fd: b, .. }, Op::Write { fd: c, .. }) if a == b && b == c);
            if in_run {
                continue;
            }
            for data in [Data::Written, Data::Half, Data::Synced] {
                for entries in [Entries::Made, Entries::Synced] {
                    let cut = Cut {
                        calls,
                        data,
                        entries,
                    };
                    out.push((cut, model.tree(data, entries)));
                }
            }
        }
        out
    }

    /// Every content `path` held at some instant, seen as the calls left it (whole files as a
    /// reader opening the path would have read them at that instant; `None`: absent).
    pub fn values_of(&self, path: &Path) -> BTreeSet<Option<Vec<u8>>> {
        let mut model = Model::default();
        let mut seen = BTreeSet::new();
        let mut look = |m: &Model| {
            let t = m.tree(Data::Written, Entries::Made);
            seen.insert(match t.get(path) {
                Some(v) => v.clone(),
                None => read_base(&self.base, path),
            });
        };
        look(&model);
        for op in &self.ops {
            model.apply(&self.base, op);
            look(&model);
        }
        seen
    }
}

fn read_base(base: &Path, path: &Path) -> Option<Vec<u8>> {
    let full = base.join(path);
    let meta = fs::symlink_metadata(&full).ok()?;
    Some(if meta.is_symlink() {
        format!("-> {}", fs::read_link(&full).ok()?.display()).into_bytes()
    } else if meta.is_dir() {
        b"/".to_vec()
    } else {
        fs::read(&full).ok()?
    })
}

/// Make the paths of `tree` under `root` what the tree says (parents first, removals last).
pub fn apply_tree(root: &Path, tree: &Tree) {
    for (path, content) in tree {
        let full = root.join(path);
        let Some(c) = content else { continue };
        if fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir()) || c != b"/" {
            remove(&full);
        }
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        if c == b"/" {
            fs::create_dir_all(&full).unwrap();
        } else if let Some(t) = c.strip_prefix(b"-> ") {
            symlink(String::from_utf8_lossy(t).as_ref(), &full).unwrap();
        } else {
            fs::write(&full, c).unwrap();
        }
    }
    for (path, content) in tree.iter().rev() {
        if content.is_none() {
            remove(&root.join(path));
        }
    }
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
        Ok(_) => fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_parses_into_the_calls_on_the_disk() {
        let hex = |s: &str| s.bytes().map(|b| format!("\\x{b:02x}")).collect::<String>();
        let root = Path::new("/m/root");
        let st = "/m/root/var/lib/upd/state.json";
        let tmp = "/m/root/var/lib/upd/.upd-tmp-state.json.1";
        let log = format!(
            "10 openat(AT_FDCWD<{d}>, \"{t}\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644 <unfinished ...>\n\
             12 close(5<{o}>) = 0\n\
             10 <... openat resumed>)            = 3<{t}>\n\
             11 write(3<{t}>, \"{v}\", 2 <unfinished ...>\n\
             12 write(1<{o}>, \"{v}\", 2) = 2\n\
             11 <... write resumed>)             = 2\n\
             10 fsync(3<{t}>) = 0\n\
             10 rename(\"{t}\", \"{s}\") = 0\n\
             10 openat(AT_FDCWD<{d}>, \"{r}\", O_RDONLY) = 4<{r}>\n\
             10 fsync(4<{r}>) = 0\n\
             10 unlink(\"{x}\") = -1 ENOENT (No such file or directory)\n\
             13 openat(AT_FDCWD<{d}>, \"{sh}\", O_WRONLY|O_CREAT, 0644) = 5<{sh}>\n",
            d = hex("/"),
            t = hex(tmp),
            s = hex(st),
            v = hex("{}"),
            o = hex("/dev/null"),
            r = hex("/m/root/var/lib/upd"),
            x = hex("/m/root/run/x"),
            sh = hex("/m/root/../shadow/x"),
        );
        let ops = parse(&log, root);
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            ops,
            [
                Op::Open {
                    fd: 3,
                    path: p("var/lib/upd/.upd-tmp-state.json.1"),
                    create: true,
                    trunc: true
                },
                Op::Write {
                    fd: 3,
                    path: p("var/lib/upd/.upd-tmp-state.json.1"),
                    at: None,
                    data: b"{}".to_vec()
                },
                Op::Sync {
                    path: p("var/lib/upd/.upd-tmp-state.json.1")
                },
                Op::Rename {
                    from: p("var/lib/upd/.upd-tmp-state.json.1"),
                    to: p("var/lib/upd/state.json")
                },
                Op::Sync {
                    path: p("var/lib/upd")
                },
            ]
        );
    }

    #[test]
    fn an_atomic_write_leaves_the_old_or_the_new_file_and_a_plain_one_tears() {
        // state.json "old" replaced by temp + fsync + rename + fsync dir; then plain.txt written in
        // place without fsync: every cut of state.json is old or new, plain.txt is also half.
        let d = tempfile::tempdir().unwrap();
        let base = d.path();
        fs::create_dir_all(base.join("v")).unwrap();
        fs::write(base.join("v/state.json"), "old").unwrap();
        fs::write(base.join("v/plain.txt"), "0123").unwrap();
        let p = |s: &str| PathBuf::from(s);
        let tmp = p("v/.tmp");
        let ops = vec![
            Op::Open {
                fd: 3,
                path: tmp.clone(),
                create: true,
                trunc: true,
            },
            Op::Write {
                fd: 3,
                path: tmp.clone(),
                at: None,
                data: b"new!".to_vec(),
            },
            Op::Sync { path: tmp.clone() },
            Op::Close { fd: 3 },
            Op::Rename {
                from: tmp,
                to: p("v/state.json"),
            },
            Op::Sync { path: p("v") },
            Op::Open {
                fd: 3,
                path: p("v/plain.txt"),
                create: true,
                trunc: true,
            },
            Op::Write {
                fd: 3,
                path: p("v/plain.txt"),
                at: None,
                data: b"abcdef".to_vec(),
            },
        ];
        let r = Replay::new(base, ops);
        let mut states = BTreeSet::new();
        let mut plain = BTreeSet::new();
        for (_, tree) in r.cuts() {
            let st = tree
                .get(Path::new("v/state.json"))
                .cloned()
                .unwrap_or(Some(b"old".to_vec()));
            states.insert(st);
            plain.extend(tree.get(Path::new("v/plain.txt")).cloned());
        }
        let b = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(states, BTreeSet::from([b("old"), b("new!")]));
        assert!(plain.contains(&b("abc")), "{plain:?}");
        assert_eq!(
            r.values_of(Path::new("v/state.json")),
            BTreeSet::from([b("old"), b("new!")])
        );
    }
}
