//! The rule both stores apply to a review: every listed job or none.

use pixelfarm_core::{Error, Result};

/// `Ok` when the review's UPDATE changed every distinct job asked; otherwise the error the
/// caller returns after rolling back. It does not say which job failed, nor whether it exists:
/// another tenant's job and an unfinished one of this tenant read the same.
pub(crate) fn all_or_none(changed: u64, asked: usize) -> Result<()> {
    let asked = asked as u64;
    if changed == asked {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "`jobs`: {} of the {asked} jobs are not succeeded jobs of this tenant; only a succeeded \
         job's image can be reviewed, and nothing was changed",
        asked.saturating_sub(changed)
    )))
}
