//! The networks and their trainable variables.

use anyhow::Result;
use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig, ShapesText, ShapesUnet};

/// The networks and their trainable variables.
pub struct Model {
    /// Variables of the UNet.
    pub unet_vars: VarMap,
    /// Variables of the text encoder.
    pub text_vars: VarMap,
    /// The UNet.
    pub unet: ShapesUnet,
    /// The text encoder.
    pub text: ShapesText,
}

impl Model {
    /// Freshly initialised networks on `dev`.
    ///
    /// # Errors
    /// Only for candle errors.
    pub fn new(arch: ShapesConfig, dev: &Device) -> Result<Self> {
        let unet_vars = VarMap::new();
        let text_vars = VarMap::new();
        let unet = ShapesUnet::new(arch, VarBuilder::from_varmap(&unet_vars, DType::F32, dev))?;
        let text = ShapesText::new(VarBuilder::from_varmap(&text_vars, DType::F32, dev))?;
        Ok(Model {
            unet_vars,
            text_vars,
            unet,
            text,
        })
    }

    /// Every trainable variable by `unet.`/`text.`-prefixed name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (prefix, vm) in [("unet.", &self.unet_vars), ("text.", &self.text_vars)] {
            let data = vm.data().lock().unwrap_or_else(|p| p.into_inner());
            let mut names: Vec<_> = data.keys().cloned().collect();
            names.sort();
            for n in names {
                out.push((format!("{prefix}{n}"), data[&n].clone()));
            }
        }
        out
    }

    /// The variables a backward with `reach` trains.
    pub fn trained_vars(&self, reach: Reach) -> Vec<(String, Var)> {
        let mut vars = self.named_vars();
        if reach == Reach::Refiner {
            vars.retain(|(n, _)| n.starts_with(REFINER_PREFIX));
        }
        vars
    }

    /// Parameter count.
    pub fn param_count(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Names of the refinement head's variables start with this.
pub(super) const REFINER_PREFIX: &str = "unet.refine.";
