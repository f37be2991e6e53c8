//! Dead properties and quota for the built-in server (`davdrive serve`).
//!
//! `dav-server`'s `LocalFs` keeps no dead properties (PROPPATCH is refused) and reports
//! no quota. `PropFs` wraps it: every call goes to `LocalFs`, and the dead properties of
//! a file or folder are kept in one extended attribute of it (`user.davdrive.props`, a
//! JSON map), so they move with a MOVE and go with a DELETE like the file itself, as on
//! Apache (which keeps them in a database file per folder). The quota is the served
//! folder's file system: used and available bytes, as `statvfs` says.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsStream,
    OpenOptions, ReadDirMeta,
};
use dav_server::localfs::LocalFs;
use futures_util::FutureExt;
use hyper::StatusCode;

const XATTR: &str = "user.davdrive.props";

#[derive(Clone)]
pub struct PropFs {
    inner: Box<LocalFs>,
    base: PathBuf,
    /// Read-modify-write of one attribute at a time.
    lock: Arc<Mutex<()>>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Stored {
    prefix: Option<String>,
    xml: Option<String>,
}

impl PropFs {
    pub fn new(base: PathBuf, inner: Box<LocalFs>) -> Box<PropFs> {
        Box::new(PropFs {
            inner,
            base,
            lock: Arc::new(Mutex::new(())),
        })
    }

    fn local(&self, path: &DavPath) -> PathBuf {
        self.base.join(path.as_rel_ospath())
    }
}

fn key(ns: &Option<String>, name: &str) -> String {
    format!("{{{}}}{}", ns.as_deref().unwrap_or(""), name)
}

fn split_key(k: &str) -> (Option<String>, String) {
    match k.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((ns, name)) => ((!ns.is_empty()).then(|| ns.to_string()), name.to_string()),
        None => (None, k.to_string()),
    }
}

fn cpath(p: &Path) -> Result<CString, FsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| FsError::GeneralFailure)
}

fn load(p: &Path) -> Result<BTreeMap<String, Stored>, FsError> {
    let c = cpath(p)?;
    let name = CString::new(XATTR).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(BTreeMap::new()),
            Some(libc::ENOENT) => Err(FsError::NotFound),
            _ => Err(FsError::GeneralFailure),
        };
    }
    buf.truncate(n as usize);
    Ok(serde_json::from_slice(&buf).unwrap_or_default())
}

fn save(p: &Path, props: &BTreeMap<String, Stored>) -> Result<(), FsError> {
    let c = cpath(p)?;
    let name = CString::new(XATTR).unwrap();
    let r = if props.is_empty() {
        let r = unsafe { libc::lremovexattr(c.as_ptr(), name.as_ptr()) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENODATA) {
            0
        } else {
            r
        }
    } else {
        let data = serde_json::to_vec(props).map_err(|_| FsError::GeneralFailure)?;
        unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                name.as_ptr(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                0,
            )
        }
    };
    if r < 0 {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => FsError::NotFound,
            Some(libc::ENOSPC) | Some(libc::E2BIG) => FsError::InsufficientStorage,
            _ => FsError::GeneralFailure,
        });
    }
    Ok(())
}

impl DavFileSystem for PropFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        self.inner.open(path, options)
    }
    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        self.inner.read_dir(path, meta)
    }
    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        self.inner.metadata(path)
    }
    fn symlink_metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        self.inner.symlink_metadata(path)
    }
    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.inner.create_dir(path)
    }
    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.inner.remove_dir(path)
    }
    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.inner.remove_file(path)
    }
    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        self.inner.rename(from, to)
    }
    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.inner.copy(from, to).await?;
            // A copy carries the dead properties, as RFC 4918 says.
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let props = load(&self.local(from))?;
            save(&self.local(to), &props)
        }
        .boxed()
    }
    fn set_accessed<'a>(
        &'a self,
        path: &'a DavPath,
        tm: std::time::SystemTime,
    ) -> FsFuture<'a, ()> {
        self.inner.set_accessed(path, tm)
    }
    fn set_modified<'a>(
        &'a self,
        path: &'a DavPath,
        tm: std::time::SystemTime,
    ) -> FsFuture<'a, ()> {
        self.inner.set_modified(path, tm)
    }
    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }
    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let p = self.local(path);
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut props = load(&p)?;
            let mut res = Vec::new();
            for (set, prop) in patch {
                let k = key(&prop.namespace, &prop.name);
                if set {
                    props.insert(
                        k,
                        Stored {
                            prefix: prop.prefix.clone(),
                            xml: prop
                                .xml
                                .as_ref()
                                .map(|x| String::from_utf8_lossy(x).into_owned()),
                        },
                    );
                } else {
                    props.remove(&k);
                }
                res.push((StatusCode::OK, DavProp { xml: None, ..prop }));
            }
            save(&p, &props)?;
            Ok(res)
        }
        .boxed()
    }
    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let props = load(&self.local(path))?;
            Ok(props
                .into_iter()
                .map(|(k, v)| {
                    let (namespace, name) = split_key(&k);
                    DavProp {
                        name,
                        prefix: v.prefix,
                        namespace,
                        xml: if do_content {
                            v.xml.map(String::into_bytes)
                        } else {
                            None
                        },
                    }
                })
                .collect())
        }
        .boxed()
    }
    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let props = load(&self.local(path))?;
            props
                .get(&key(&prop.namespace, &prop.name))
                .and_then(|s| s.xml.clone())
                .map(String::into_bytes)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }
    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let c = cpath(&self.base)?;
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
                return Err(FsError::GeneralFailure);
            }
            let fr = st.f_frsize as u64;
            let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * fr;
            let avail = st.f_bavail as u64 * fr;
            Ok((used, Some(used + avail)))
        }
        .boxed()
    }
}
