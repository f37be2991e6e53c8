//! Folder creations.

use std::sync::Arc;

use super::{done, ReplayResult};
use crate::fs::Core;
use crate::journal::Entry;
use super::parents::with_parents;

pub(super) async fn mkcol(core: &Arc<Core>, e: &Entry) -> ReplayResult {
    with_parents(core, e, &e.path, || async {
        Ok(core.remote().mkcol(&e.path).await?)
    })
    .await?;
    let conn = core.store();
    let tx = conn.unchecked_transaction()?;
    crate::store::versions::mark_on_remote(&tx, e.ino)?;
    done(core, &tx, e)?;
    Ok(tx.commit()?)
}

