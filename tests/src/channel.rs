//! A channel publisher for the end-to-end suites: keys, root, real images, signed manifests in a repository dir.
//!
//! Layout written (what `upd` reads from its `SERVER`):
//! `REPO/roots/1.root.json`, `REPO/channels/<ch>/manifest.json`, `REPO/images/<name>/<name>-<ver>-<sha12>.raw`.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use semver::Version;
use upd_channels::chunks::{self, ChunkIndex};
use upd_channels::manifest::{
    ExtBuild, ExtIdentity, IndexRef, Manifest, OsBuild, OsIdentity, Release, Sha256, Target,
    MANIFEST_PAYLOAD_TYPE,
};
use upd_channels::name::{Name, RelPath};
use upd_channels::osrelease::native_architecture;
use upd_channels::verify::sign_manifest;
use upd_channels::version::OsVersion;
use upd_keys::{sign_root, RootDocument, SigningKey};

use crate::images::{build_os_usr, build_sysext, sha256_file, OsSpec, SysextSpec};

/// A channel repository on disk with its signing keys and the manifest being edited.
pub struct Channel {
    dir: tempfile::TempDir,
    root_key: SigningKey,
    /// The root key of the version before `root_version` (to re-issue root `root_version`).
    prev_root_key: Option<SigningKey>,
    root_version: u64,
    channel_key: SigningKey,
    /// The channel key's PKCS#8 bytes (for `upd-channel --key`).
    channel_pkcs8: Vec<u8>,
    root_bytes: Vec<u8>,
    /// The manifest as the next [`Channel::publish`] signs it (edit freely; `publish` bumps the serial).
    pub manifest: Manifest,
    /// Write a chunk index next to each image imported from now on (as `upd-channel` does).
    pub chunk_indexes: bool,
}

impl Channel {
    /// A new repository for channel `name`: fresh root and channel keys, root version 1 written, no releases.
    pub fn new(name: &str) -> Channel {
        let dir = tempfile::Builder::new()
            .prefix("upd-repo-")
            .tempdir()
            .expect("repo temp dir");
        let (root_key, _) = SigningKey::generate().expect("root key");
        let (channel_key, channel_pkcs8) = SigningKey::generate().expect("channel key");
        let now = Utc::now();
        let doc = RootDocument::new(
            1,
            now + Duration::days(365),
            &[root_key.public()],
            1,
            &[channel_key.public()],
            1,
        )
        .expect("valid root document");
        let root_bytes = sign_root(&doc, &[&root_key])
            .expect("sign root")
            .to_json_bytes();
        let ch = Channel {
            dir,
            root_key,
            prev_root_key: None,
            root_version: 1,
            channel_key,
            channel_pkcs8,
            root_bytes,
            manifest: Manifest::new(Name::new(name).expect("channel name"), now),
            chunk_indexes: false,
        };
        ch.write("roots/1.root.json", &ch.root_bytes);
        ch
    }

    /// The repository directory (serve it as the channel's `SERVER`).
    pub fn repo(&self) -> &Path {
        self.dir.path()
    }

    /// The root envelope to ship on machines (`/usr/share/upd/keys/root.json`).
    pub fn root_json(&self) -> &[u8] {
        &self.root_bytes
    }

    /// The repository-relative path of the channel's manifest.
    pub fn manifest_rel(&self) -> String {
        format!("channels/{}/manifest.json", self.manifest.channel)
    }

    /// Add an OS release `version` for `os` (a real USR image is built and imported).
    pub fn add_os_release(&mut self, version: &str, os: &OsSpec) {
        let scratch = tempfile::tempdir_in(self.repo()).expect("scratch dir");
        let img = build_os_usr(os, scratch.path());
        let image = self.import(&img, &format!("os/{}", os.id), &format!("usr-{version}"));
        let identity = OsIdentity {
            id: os.id.clone(),
            version_id: Some(os.version_id.clone()),
            sysext_level: os.sysext_level.clone(),
            architecture: native_architecture().to_string(),
            id_like: Vec::new(),
            systemd: None,
        };
        let release = Release::new(
            OsVersion::parse(version).expect("OS version"),
            OsBuild { identity, image },
            Vec::new(),
        );
        self.manifest.releases.push(release);
        self.manifest
            .releases
            .sort_by(|a, b| a.version.cmp(&b.version));
    }

    /// Build `spec`, import it and list it (declaring what the image declares) under OS release `os_version`.
    pub fn add_extension(&mut self, os_version: &str, spec: &SysextSpec) -> ExtBuild {
        let scratch = tempfile::tempdir_in(self.repo()).expect("scratch dir");
        let img = build_sysext(spec, scratch.path());
        let image = self.import(&img, &spec.name, &format!("{}-{}", spec.name, spec.version));
        let build = ExtBuild::new(
            Name::new(&spec.name).expect("extension name"),
            Version::parse(&spec.version).expect("semver extension version"),
            image,
            identity_of(spec),
        );
        self.release_mut(os_version).extensions.push(build.clone());
        build
    }

    /// Remove every build of extension `name` at `version` from OS release `os_version`.
    pub fn remove_extension(&mut self, os_version: &str, name: &str, version: &str) {
        let v = Version::parse(version).expect("semver");
        self.release_mut(os_version)
            .extensions
            .retain(|b| !(b.name.as_str() == name && b.version == v));
    }

    /// The release `os_version` of the manifest being edited.
    pub fn release_mut(&mut self, os_version: &str) -> &mut Release {
        let v = OsVersion::parse(os_version).expect("OS version");
        self.manifest
            .releases
            .iter_mut()
            .find(|r| r.version == v)
            .unwrap_or_else(|| panic!("no release {v} in the channel"))
    }

    /// Rotate the root: fresh root and channel keys in root version N+1, signed by the old and the new root
    /// key, written as `roots/<N+1>.root.json`; later manifests are signed by the new channel key only.
    pub fn rotate_root(&mut self) {
        self.rotate_root_expiring(Utc::now() + Duration::days(365));
    }

    /// [`Channel::rotate_root`] with the new root expiring at `expires` (an expired root, say).
    pub fn rotate_root_expiring(&mut self, expires: DateTime<Utc>) {
        let (root_key, _) = SigningKey::generate().expect("root key");
        let old = std::mem::replace(&mut self.root_key, root_key);
        self.prev_root_key = Some(old);
        self.root_version += 1;
        self.issue_root(expires);
    }

    /// Replace root version N (the newest) by a fresh document of the same version with fresh
    /// channel keys, expiring at `expires`, signed by root N-1's key and N's; later manifests are
    /// signed by the new channel key.
    pub fn reissue_root(&mut self, expires: DateTime<Utc>) {
        self.issue_root(expires);
    }

    /// Write root `root_version` with a fresh channel key, signed by the previous and the current
    /// root keys.
    fn issue_root(&mut self, expires: DateTime<Utc>) {
        let (channel_key, pkcs8) = SigningKey::generate().expect("channel key");
        self.channel_pkcs8 = pkcs8;
        let version = self.root_version;
        let doc = RootDocument::new(
            version,
            expires,
            &[self.root_key.public()],
            1,
            &[channel_key.public()],
            1,
        )
        .expect("valid root document");
        let prev = self.prev_root_key.as_ref().expect("a root before this one");
        let bytes = sign_root(&doc, &[prev, &self.root_key])
            .expect("sign root")
            .to_json_bytes();
        self.write(&format!("roots/{version}.root.json"), &bytes);
        self.channel_key = channel_key;
    }

    /// Bump the serial, sign with the channel key, write `channels/<ch>/manifest.json`; returns the envelope.
    pub fn publish(&mut self) -> Vec<u8> {
        let now = Utc::now();
        self.publish_at(now, now + Duration::days(7))
    }

    /// [`Channel::publish`] with the given issue and expiry instants (an expired manifest, a far future one).
    pub fn publish_at(&mut self, issued: DateTime<Utc>, expires: DateTime<Utc>) -> Vec<u8> {
        self.manifest.serial += 1;
        self.manifest.issued = issued;
        self.manifest.expires = expires;
        self.manifest
            .validate()
            .expect("the test manifest is valid");
        let envelope = sign_manifest(&self.manifest, &[&self.channel_key]);
        self.write(&self.manifest_rel(), &envelope);
        envelope
    }

    /// Hand the repository to `upd-channel`: the manifest being edited written as the channel's
    /// draft (`channels/<ch>/draft.json`) and the channel key as a PKCS#8 file (mode 0600)
    /// outside the served tree; returns the key file.
    pub fn for_upd_channel(&self) -> PathBuf {
        let ch = self.manifest.channel.as_str().to_string();
        self.write(
            &format!("channels/{ch}/draft.json"),
            &serde_json::to_vec_pretty(&self.manifest).expect("manifest serialises"),
        );
        let key = self.dir.path().join("channel.key");
        fs::write(&key, &self.channel_pkcs8).expect("write the channel key");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        fs::set_permissions(&key, mode).expect("chmod the channel key");
        key
    }

    /// Take back the draft `upd-channel` left (after it signed): the manifest being edited
    /// becomes the draft, serial included.
    pub fn reload_draft(&mut self) {
        let ch = self.manifest.channel.as_str().to_string();
        let bytes = fs::read(self.dir.path().join(format!("channels/{ch}/draft.json")))
            .expect("read the draft");
        self.manifest = Manifest::from_bytes(&bytes).expect("the draft parses");
    }

    /// Sign arbitrary manifest payload bytes with the channel key (a hostile publisher's manifest that the
    /// schema must refuse); returns the envelope.
    pub fn sign_payload(&self, payload: &[u8]) -> Vec<u8> {
        upd_keys::Envelope::sign(MANIFEST_PAYLOAD_TYPE, payload, &[&self.channel_key])
            .to_json_bytes()
    }

    /// Write `bytes` as the channel's manifest file as is (a replay, a tampered copy).
    pub fn write_manifest_bytes(&self, bytes: &[u8]) {
        self.write(&self.manifest_rel(), bytes);
    }

    /// The file of `target` in the repository.
    pub fn file(&self, target: &Target) -> PathBuf {
        target.path.under(self.repo())
    }

    /// Every file of the repository, as (URL path starting with `/`, file).
    pub fn files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for top in ["roots", "channels", "images"] {
            collect(self.repo(), &self.repo().join(top), &mut out);
        }
        out
    }

    /// Copy image `src` to `images/<sub>/<stem>-<sha12>.raw` and describe it.
    fn import(&self, src: &Path, sub: &str, stem: &str) -> Target {
        let sha = sha256_file(src);
        let rel = format!("images/{sub}/{stem}-{}.raw", &sha[..12]);
        let dest = self.repo().join(&rel);
        fs::create_dir_all(dest.parent().expect("parent")).expect("create image dir");
        fs::copy(src, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        let chunk_index = self.chunk_indexes.then(|| {
            let file = fs::File::open(&dest).expect("open image");
            let ix = ChunkIndex::build(std::io::BufReader::new(file), chunks::DEFAULT_PARAMS)
                .expect("chunk image")
                .to_bytes();
            let ix_rel = format!("{rel}.chunks");
            fs::write(self.repo().join(&ix_rel), &ix).expect("write chunk index");
            IndexRef {
                path: RelPath::new(&ix_rel).expect("relative index path"),
                size: ix.len() as u64,
                sha256: Sha256(chunks::sha256(&ix)),
            }
        });
        Target {
            path: RelPath::new(&rel).expect("relative image path"),
            size: fs::metadata(&dest).expect("stat image").len(),
            sha256: Sha256::from_hex(&sha).expect("hex sha256"),
            chunk_index,
        }
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.repo().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("create repo dir");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
    }
}

/// The extension-release identity `spec` writes into its image.
pub fn identity_of(spec: &SysextSpec) -> ExtIdentity {
    ExtIdentity {
        id: spec.id.clone(),
        version_id: spec.version_id.clone(),
        sysext_level: spec.sysext_level.clone(),
        architecture: spec.architecture.clone(),
        scope: spec.scope.clone(),
    }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(base, &p, out);
        } else {
            let rel = p.strip_prefix(base).expect("under the repo");
            out.push((format!("/{}", rel.display()), p));
        }
    }
}
