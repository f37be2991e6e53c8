//! Folder creations.

use std::sync::Arc;

use super::parents::with_parents;
use super::{done, ReplayError, ReplayResult};
use crate::fs::Core;
use crate::journal::Entry;
use crate::remote::RemoteError;

pub(super) async fn mkcol(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    let made = with_parents(core, e, &e.path, || async {
        Ok(core.remote().mkcol(&e.path).await?)
    })
    .await;
    match made {
        Ok(()) => {}
        Err(ReplayError::Remote(RemoteError::Refused { status: 405, .. })) => {
            match core.remote().stat(&e.path).await? {
                // Another client put a file at the name: our folder goes beside it, and
                // the changes inside it follow (see `parents`).
                Some(s) if !s.is_dir => {
                    super::parents::move_aside(core, e, &e.path).await?;
                    return Err(ReplayError::Later(format!(
                        "{}: a file took its name on the server; the folder was moved aside",
                        e.path
                    )));
                }
                // What refused it is gone again (they moved or removed their file since),
                // or is a folder now: the next attempt sees which. Not one for a person.
                _ => {
                    return Err(ReplayError::Retry(format!(
                        "{}: MKCOL refused (405) by something no longer there",
                        e.path
                    )))
                }
            }
        }
        Err(err) => return Err(err),
    }
    core.db().write(|tx| {
        crate::store::versions::mark_on_remote(tx, e.ino)?;
        done(core, tx, e)
    })?;
    super::meta::after(core, e).await;
    Ok(())
}
