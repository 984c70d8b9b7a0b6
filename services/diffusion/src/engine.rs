//! [`DiffusionEngine`]: the worker's [`Renderer`], with a bounded LRU of loaded models.

use candle_core::Device;
use pixelfarm_core::{
    AppliedControlNet, AppliedLora, Controls, Error, ErrorKind, ImageInput, JobInputs, JobParams,
    Loras, ModelIdentity, ModelLimits, ModelName, RenderControl, RenderedImage, Renderer, Result,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::control::JobControl;
use crate::controlnet::ControlNet;
use crate::model::LoadedModel;
use crate::registry::{AdapterKind, DeviceChoice, RegistryConfig};

/// The renderer implementation name that goes into [`ModelIdentity::renderer`]; bump the number
/// whenever the same weights and parameters would give different pixels.
pub const RENDERER: &str = "candle-sd/1";

/// Renders jobs with the models of a [`RegistryConfig`]. Cheap to share (`Arc`); every method blocks.
pub struct DiffusionEngine {
    config: RegistryConfig,
    device: Device,
    device_name: String,
    /// Most recently used first.
    loaded: Mutex<Vec<(ModelName, Arc<LoadedModel>)>>,
    /// Loaded models with a LoRA set merged, by model and [`Loras::fingerprint`]; most recently
    /// used first, at most `max_lora_sets`.
    variants: Mutex<Vec<(ModelName, u64, Arc<LoadedModel>)>>,
    /// Loaded ControlNets by name; most recently used first, at most `max_controlnets`.
    controlnets: Mutex<Vec<(ModelName, Arc<ControlNet>)>>,
    /// Held by the render that is on the CPU kernels' thread pool ([`Self::compute`]).
    cpu_render: Mutex<()>,
}

impl DiffusionEngine {
    /// An engine for `config`; nothing is loaded until a model is first used (or [`Self::preload`]).
    ///
    /// # Errors
    /// `Invalid` for a config that does not validate, or a CUDA device when this build has no CUDA
    /// or no GPU is visible.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        config.validate()?;
        let (device, device_name) = match config.device {
            DeviceChoice::Cpu => (Device::Cpu, "cpu".to_string()),
            DeviceChoice::Cuda => (
                Device::new_cuda(0).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Invalid,
                        "device `cuda` is not available (build with `--features cuda` on a GPU host)",
                        e,
                    )
                })?,
                "cuda:0".to_string(),
            ),
        };
        Ok(DiffusionEngine {
            config,
            device,
            device_name,
            loaded: Mutex::new(Vec::new()),
            variants: Mutex::new(Vec::new()),
            controlnets: Mutex::new(Vec::new()),
            cpu_render: Mutex::new(()),
        })
    }

    /// Runs `f`, the work of one render, where the CPU kernels are fastest: on a thread of the
    /// rayon pool that they split their loops over, one render at a time. On CUDA, `f` just runs.
    ///
    /// Called from any other thread, every parallel loop of the kernels (hundreds per UNet step)
    /// is handed to the pool and the caller sleeps until a pool thread wakes it: two futex wakes
    /// and context switches per op, with the pool's threads going to sleep in between. From a
    /// pool thread the loop starts where it is (the gain: docs/benchmarks.md, "Renders run on a
    /// thread of the kernels' pool").
    ///
    /// One render at a time because they share the same cores (two at once finish no sooner),
    /// and because a pool thread waiting inside one render's loop may pick up work queued on the
    /// pool, which would then be a whole other render run on top of it: the first would stall
    /// until the second ended. The lock is taken before the work is queued, so that cannot
    /// happen, and no lock is held inside the pool.
    fn compute<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if !self.device.is_cpu() {
            return f();
        }
        let _one = self.cpu_render.lock().unwrap_or_else(|p| p.into_inner());
        rayon::scope(|_| f())
    }

    /// The registry this engine serves.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The models this worker serves (to subscribe to their queues).
    pub fn served_models(&self) -> Vec<ModelName> {
        self.config.models.keys().cloned().collect()
    }

    /// The models loaded right now, most recently used first.
    pub fn loaded_models(&self) -> Vec<ModelName> {
        self.lock().iter().map(|(n, _)| n.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ModelName, Arc<LoadedModel>)>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Load (and verify) `model` now unless it is loaded; returns the seconds spent loading.
    ///
    /// # Errors
    /// As [`LoadedModel::load`], and `Permanent` for a model the registry does not list.
    pub fn preload(&self, model: &ModelName) -> Result<f64> {
        self.get(model).map(|(_, secs)| secs)
    }

    /// `model`, loaded (and verified) now unless it is: its stages one at a time
    /// ([`LoadedModel::text_conditioning`] …), for checks against other implementations.
    ///
    /// # Errors
    /// As [`Self::preload`].
    pub fn loaded_model(&self, model: &ModelName) -> Result<Arc<LoadedModel>> {
        self.get(model).map(|(m, _)| m)
    }

    /// [`Self::loaded_model`] with the LoRA set `loras` merged, as a job with them renders.
    ///
    /// # Errors
    /// As [`Self::preload`], and `Permanent` for a LoRA the registry does not list or that does
    /// not fit the model.
    pub fn loaded_model_with(&self, model: &ModelName, loras: &Loras) -> Result<Arc<LoadedModel>> {
        self.get_with(model, loras).map(|(m, _)| m)
    }

    /// The loaded model, loading it (and evicting the least recently used) when needed.
    fn get(&self, model: &ModelName) -> Result<(Arc<LoadedModel>, f64)> {
        let entry = self.config.entry(model)?;
        // Held while loading: two jobs for a cold model load it once.
        let mut loaded = self.lock();
        if let Some(pos) = loaded.iter().position(|(n, _)| n == model) {
            let hit = loaded.remove(pos);
            let m = hit.1.clone();
            loaded.insert(0, hit);
            return Ok((m, 0.0));
        }
        let start = Instant::now();
        let dir = self.config.local_dir(model)?;
        let m = Arc::new(LoadedModel::load(entry, &dir, &self.device)?);
        tracing::info!(model = %model, family = %entry.family, seconds = m.load_seconds, "model loaded");
        loaded.insert(0, (model.clone(), m.clone()));
        loaded.truncate(self.config.max_loaded);
        // An evicted model's LoRA sets would keep its weights alive: they go with it.
        self.variants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(name, _, _)| loaded.iter().any(|(n, _)| n == name));
        Ok((m, start.elapsed().as_secs_f64()))
    }

    /// `model` with the LoRAs of a job merged (the model itself when none has a non-zero
    /// weight), building the set now unless it is one of the last `max_lora_sets`; returns the
    /// seconds spent loading and merging.
    fn get_with(&self, model: &ModelName, loras: &Loras) -> Result<(Arc<LoadedModel>, f64)> {
        let (base, load_secs) = self.get(model)?;
        let fingerprint = loras.fingerprint();
        if fingerprint == 0 {
            return Ok((base, load_secs));
        }
        // Held while merging: two groups with a new set merge it once.
        let mut variants = self.variants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = variants
            .iter()
            .position(|(n, f, _)| n == model && *f == fingerprint)
        {
            let hit = variants.remove(pos);
            let m = hit.2.clone();
            variants.insert(0, hit);
            return Ok((m, load_secs));
        }
        let entry = self.config.entry(model)?;
        let files = loras
            .effective()
            .into_iter()
            .map(|l| {
                let lora = self.config.adapter(AdapterKind::Lora, model, &l.name)?;
                let bytes = self.config.read_adapter(AdapterKind::Lora, &l.name, lora)?;
                Ok((l.name.as_str(), bytes, l.weight.get()))
            })
            .collect::<Result<Vec<_>>>()?;
        let m = Arc::new(self.compute(|| base.with_loras(entry, &files))?);
        tracing::info!(model = %model, loras = files.len(), seconds = m.load_seconds, "LoRA set merged");
        variants.insert(0, (model.clone(), fingerprint, m.clone()));
        variants.truncate(self.config.max_lora_sets);
        let secs = load_secs + m.load_seconds;
        Ok((m, secs))
    }

    /// The ControlNets of `params` for `model` (loaded `m`), each loaded now unless it is one of
    /// the last `max_controlnets`; returns the seconds spent loading.
    ///
    /// # Errors
    /// `Permanent` for a ControlNet the registry does not list, of another family, or whose
    /// file does not fit the family's UNet; as [`RegistryConfig::read_adapter`] for its file.
    fn controlnets_for(
        &self,
        model: &ModelName,
        m: &LoadedModel,
        params: &JobParams,
    ) -> Result<(Vec<Arc<ControlNet>>, f64)> {
        let start = Instant::now();
        let family = self.config.entry(model)?.family;
        let mut nets = Vec::new();
        for c in params.control.iter() {
            let entry = self
                .config
                .adapter(AdapterKind::ControlNet, model, &c.model)?;
            // Held while loading: two jobs needing a new ControlNet load it once.
            let mut cache = self.controlnets.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pos) = cache.iter().position(|(n, _)| *n == c.model) {
                let hit = cache.remove(pos);
                nets.push(hit.1.clone());
                cache.insert(0, hit);
                continue;
            }
            let bytes = self
                .config
                .read_adapter(AdapterKind::ControlNet, &c.model, entry)?;
            let net = Arc::new(m.load_controlnet(c.model.as_str(), family, &bytes)?);
            tracing::info!(model = %model, controlnet = %c.model, "ControlNet loaded");
            cache.insert(0, (c.model.clone(), net.clone()));
            cache.truncate(self.config.max_controlnets);
            nets.push(net);
        }
        Ok((nets, start.elapsed().as_secs_f64()))
    }

    /// [`Renderer::render_batch`]: groups the jobs by [`pixelfarm_core::BatchKey`] (at most the
    /// model's `max_batch` each, [`pixelfarm_core::batch::groups`]) and renders group by group,
    /// reporting each group's steps to its jobs' controls; a group stops
    /// between steps once all of its jobs are cancelled.
    fn render_groups(
        &self,
        model: &ModelName,
        jobs: &[JobParams],
        controls: &[RenderControl],
    ) -> Vec<Result<RenderedImage>> {
        let base_secs = match self.get(model) {
            Ok((_, secs)) => secs,
            Err(e) => return jobs.iter().map(|_| Err(copy_error(&e))).collect(),
        };
        let max_batch = self
            .config
            .limits(model)
            .map_or(self.config.max_batch, |l| l.max_batch);
        let groups = pixelfarm_core::batch::groups(jobs, max_batch);
        let mut results: Vec<Option<Result<RenderedImage>>> = jobs.iter().map(|_| None).collect();
        for idx in groups {
            let group: Vec<&JobParams> = idx.iter().map(|&i| &jobs[i]).collect();
            let group_controls: Vec<&RenderControl> =
                idx.iter().filter_map(|&i| controls.get(i)).collect();
            let all_cancelled =
                || !group_controls.is_empty() && group_controls.iter().all(|c| c.is_cancelled());
            // The model with the group's LoRAs (the same for every job of a group), merged
            // only for a group that still has a job to render.
            let (outcome, merge_secs) = if all_cancelled() {
                (Err(Error::cancelled()), 0.0)
            } else {
                match self.get_with(model, &group[0].loras) {
                    Err(e) => (Err(e), 0.0),
                    Ok((m, secs)) => {
                        let mut cb = |step: usize, steps: usize| {
                            for c in &group_controls {
                                c.report(step as u32, steps as u32);
                            }
                            !all_cancelled()
                        };
                        let fused = self.config.fused_batches;
                        let none = &JobControl::NONE;
                        let images = self.compute(|| m.render_group(&group, fused, none, &mut cb));
                        (images, secs)
                    }
                }
            };
            // The model's load shared by every job, its LoRA set's merge by the group's.
            let load_secs = base_secs / jobs.len() as f64 + merge_secs / idx.len() as f64;
            match outcome {
                Ok(images) => {
                    for (&i, mut img) in idx.iter().zip(images) {
                        img.phases.insert("model_load".into(), load_secs);
                        results[i] = Some(Ok(img));
                    }
                }
                Err(e) => {
                    for &i in &idx {
                        results[i] = Some(Err(copy_error(&e)));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::permanent("job was not rendered"))))
            .collect()
    }
}

impl DiffusionEngine {
    /// One job with input images: img2img (`inputs.init` without a mask) or inpainting from an
    /// init image, text-to-image without one; steered by the job's ControlNets when it has
    /// some (one control image each, `inputs.control`). Plain UNets inpaint by blending the kept
    /// area back into the latents at every step; 9-channel inpainting UNets get the mask and the
    /// masked image as extra input channels.
    ///
    /// `control` gets the progress and stops the render between steps once cancelled.
    ///
    /// # Errors
    /// As [`ImageInput::prepared`] for the init image, as [`Self::controlnets_for`] for the
    /// ControlNets, `Permanent` when the control images are not one per ControlNet, else as
    /// [`Renderer::render`].
    pub fn render_image(
        &self,
        model: &ModelName,
        params: &JobParams,
        inputs: &JobInputs,
        control: &RenderControl,
    ) -> Result<RenderedImage> {
        let (m, load_secs) = self.get_with(model, &params.loras)?;
        let (nets, net_secs) = self.controlnets_for(model, &m, params)?;
        let guides = JobControl {
            nets,
            specs: params.control.iter().cloned().collect(),
            images: &inputs.control,
        };
        let mut on_step = |step: usize, steps: usize| {
            control.report(step as u32, steps as u32);
            !control.is_cancelled()
        };
        let mut img = match &inputs.init {
            Some(input) => {
                let (rgb, mask) = input.prepared(params.width, params.height)?;
                self.compute(|| {
                    let mask = mask.as_deref();
                    m.render_from_image(params, &rgb, input.strength, mask, &guides, &mut on_step)
                })?
            }
            None => self
                .compute(|| m.render_group(&[params], false, &guides, &mut on_step))?
                .pop()
                .ok_or_else(|| Error::permanent("job was not rendered"))?,
        };
        img.phases.insert("model_load".into(), load_secs + net_secs);
        Ok(img)
    }

    /// The final latents of [`Self::render_image`] from an init image and the init image's
    /// latents (flattened, `(4, h/8, w/8)`), for tests that must look before the VAE decoder,
    /// whose receptive field covers the whole image.
    ///
    /// # Errors
    /// As [`Self::render_image`].
    #[doc(hidden)]
    pub fn render_image_latents(
        &self,
        model: &ModelName,
        params: &JobParams,
        input: &ImageInput,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (rgb, mask) = input.prepared(params.width, params.height)?;
        let (m, _) = self.get_with(model, &params.loras)?;
        let (out, init, _, _) = self.compute(|| {
            m.image_latents(
                params,
                &rgb,
                input.strength,
                mask.as_deref(),
                &JobControl::NONE,
                &mut |_, _| true,
            )
        })?;
        let flat = |t: candle_core::Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(crate::failure::render_error)
        };
        Ok((flat(out)?, flat(init)?))
    }

    /// `rgb` (at `width x height`) encoded and decoded by `model`'s VAE: the best img2img at
    /// strength 0 can do.
    ///
    /// # Errors
    /// As [`Renderer::render`].
    pub fn vae_round_trip(
        &self,
        model: &ModelName,
        width: u32,
        height: u32,
        rgb: &[u8],
    ) -> Result<Vec<u8>> {
        let (m, _) = self.get(model)?;
        self.compute(|| m.vae_round_trip(width, height, rgb))
    }
}

/// The same error again (the original is not `Clone`): kind and full message.
fn copy_error(e: &Error) -> Error {
    Error::new(e.kind(), e.chain())
}

impl Renderer for DiffusionEngine {
    fn identity(&self, model: &ModelName) -> Result<ModelIdentity> {
        let entry = self.config.entry(model)?;
        Ok(ModelIdentity {
            renderer: RENDERER.to_string(),
            id: entry.weights_id(),
            device: self.device_name.clone(),
            test_pattern: false,
        })
    }

    fn render(&self, model: &ModelName, params: &JobParams) -> Result<RenderedImage> {
        self.render_groups(model, std::slice::from_ref(params), &[])
            .pop()
            .unwrap_or_else(|| Err(Error::permanent("job was not rendered")))
    }

    fn loras(&self, model: &ModelName, loras: &Loras) -> Result<Vec<AppliedLora>> {
        loras
            .iter()
            .map(|l| {
                let entry = self.config.adapter(AdapterKind::Lora, model, &l.name)?;
                Ok(AppliedLora {
                    name: l.name.clone(),
                    weight: l.weight,
                    sha256: entry.sha256.clone(),
                })
            })
            .collect()
    }

    fn limits(&self, model: &ModelName) -> Option<ModelLimits> {
        self.config.limits(model).ok()
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch
    }

    fn controlnets(&self, model: &ModelName, control: &Controls) -> Result<Vec<AppliedControlNet>> {
        control
            .iter()
            .map(|c| {
                let entry = self
                    .config
                    .adapter(AdapterKind::ControlNet, model, &c.model)?;
                Ok(AppliedControlNet {
                    name: c.model.clone(),
                    sha256: entry.sha256.clone(),
                })
            })
            .collect()
    }

    fn render_from(
        &self,
        model: &ModelName,
        params: &JobParams,
        inputs: &JobInputs,
        control: &RenderControl,
    ) -> Result<RenderedImage> {
        self.render_image(model, params, inputs, control)
    }

    fn render_batch(
        &self,
        model: &ModelName,
        jobs: &[JobParams],
        controls: &[RenderControl],
    ) -> Vec<Result<RenderedImage>> {
        self.render_groups(model, jobs, controls)
    }
}
