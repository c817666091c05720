"""Every provgen hook, and nothing else.

Plugins implement these with ``@provgen.core.hookimpl``. Rules (see docs/plugin_hooks.md):

* hooks are called with keyword arguments only; an implementation may accept any subset of the parameters;
* ``register_*`` hooks receive a ``register`` callback rather than returning values, so the host can add
  keyword arguments to ``register`` later without breaking plugins;
* ``firstresult`` hooks answer "who handles this": the first non-``None`` result wins;
* cross-cutting work (timing, tracing, resource handling) wraps a hook with ``@hookimpl(wrapper=True)``.

The order of one generation (``Engine.generate``) is::

    validate_request -> check_policy -> [load pipeline] -> [set scheduler] -> adapt_pipeline -> call_arguments
      -> sample (on_step_end after every denoising step) -> [post-processors] -> release_pipeline
      -> provenance_contribution -> provide_signer (once per engine) -> [watermark, fingerprint, sign, register]

``release_pipeline`` runs in a ``finally`` block, so it also runs when sampling fails; it runs before
``provenance_contribution``, so a contribution must not rely on state that ``release_pipeline`` undoes.
``check_policy``, ``call_arguments`` and ``provenance_contribution`` are called plugin by plugin (provgen must
know who returned what), so they cannot be wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # heavy or circular imports only for type checkers
    import click
    from PIL import Image

    from provgen.core.config import Settings
    from provgen.core.context import GenerationContext, ProvenanceContribution
    from provgen.core.policy import PolicyDecision
    from provgen.core.request import GenerationRequest
    from provgen.provenance.keys import SigningIdentity
    from provgen.provenance.remote_signing import RemoteSigningIdentity

PROJECT = "provgen"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookspec", "hookimpl"]


# --------------------------------------------------------------------------------------------------------
# Registration hooks: called once per plugin manager, the first time the registry they fill is needed.
# --------------------------------------------------------------------------------------------------------


@hookspec
def register_schedulers(register: Callable[..., None]) -> None:
    """Register named noise schedulers.

    Called the first time a scheduler is looked up (``provgen schedulers list``, ``--scheduler``).

    :param register: call ``register(name, class_name, *, config=None, description="", requires=())`` once
        per scheduler. ``name`` is the short name users type (``"dpmpp_2m"``); ``class_name`` names a
        diffusers scheduler class (``"DPMSolverMultistepScheduler"``); ``config`` holds keyword overrides
        passed to ``from_config``; ``requires`` lists importable modules the scheduler needs (``"torchsde"``).
        Registering a name twice raises :class:`~provgen.core.errors.PluginError`.
    :return: nothing.
    """


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register models by name, so ``--model NAME`` finds a folder the plugin ships or knows about.

    Called the first time a model name is resolved (``generate``, ``schedulers list``, ``models list``).
    A registered name wins over a hub id of the same spelling; a path that exists on disk wins over both.

    :param register: call ``register(name, path, description="", guidance_scale=None)`` where ``path`` is a
        local diffusers folder (with ``model_index.json``) and ``guidance_scale`` (0-100) the classifier-free
        guidance a request gets when it names none, by this name or by this folder's path (``None``: 7.5).
        Registering a name twice raises :class:`~provgen.core.errors.PluginError`.
    :return: nothing.
    """


@hookspec
def register_conditioners(register: Callable[..., None]) -> None:
    """Register conditioners: features that add inputs to sampling (ControlNet, IP-Adapter, LoRA, img2img).

    Called the first time a request has ``plugin_options``: every key must name a registered conditioner,
    or the request is refused with a ``ValidationError`` listing the installed ones.

    :param register: call ``register(name, description="")`` once per conditioner the plugin provides.
        The conditioner then does its work in :func:`adapt_pipeline`, :func:`call_arguments` and
        :func:`provenance_contribution` when ``request.plugin_options`` has an entry under its name.
    :return: nothing.
    """


@hookspec
def register_postprocessors(register: Callable[..., None]) -> None:
    """Register image post-processors that requests chain by name (``GenerationRequest.postprocess``).

    Called the first time a post-processor is looked up. Post-processors run after sampling and before the
    provenance layer, so the watermark and the signature cover their output.

    :param register: call ``register(name, function, description="", version=None, validate=None)``, where
        ``function(image: PIL.Image.Image, args: str) -> PIL.Image.Image`` returns a new image; ``args`` is
        the text after ``NAME:`` in ``--post NAME:ARGS`` (empty when none). ``validate(args: str) -> None``,
        if given, raises :class:`~provgen.core.errors.ValidationError` or ``ValueError`` for bad ``args``;
        it runs with the name checks, before the model loads. Each use is recorded in the recipe with the
        plugin's name and ``version``, and in the C2PA manifest as a ``c2pa.edited`` action.
    :return: nothing.
    """


@hookspec
def register_watermarks(register: Callable[..., None]) -> None:
    """Register invisible watermark methods.

    Called the first time a watermark method is needed (generation or verification).

    :param register: call ``register(method)`` with an object satisfying
        :class:`provgen.provenance.watermark.WatermarkMethod` (``name``, ``payload_bits``,
        ``soft_binding_alg``, ``embed(image, payload)``, ``decode(image)``).
    :return: nothing.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``provgen`` command line.

    Called when the CLI looks for a command it does not define itself, or lists all commands (``--help``).

    :param cli: the top-level click group; use ``@cli.command()`` or ``cli.add_command(...)``.
    :return: nothing.
    """


# --------------------------------------------------------------------------------------------------------
# Generation hooks: called for every request, in the order given in the module docstring.
# --------------------------------------------------------------------------------------------------------


@hookspec
def validate_request(request: GenerationRequest, settings: Settings) -> None:
    """Check a request before any model is loaded (bad or unsupported fields; policy is :func:`check_policy`).

    Called after provgen's own field checks and before the pipeline is loaded.

    :param request: the generation request (frozen).
    :param settings: resolved provgen settings.
    :return: nothing. Raise :class:`~provgen.core.errors.ValidationError` naming the field to reject the
        request; no file or registry record is written.
    """


@hookspec(firstresult=True)
def check_policy(request: GenerationRequest, settings: Settings) -> PolicyDecision | None:
    """Decide whether a valid request may run: return a refusal, or ``None`` to let it through.

    Called after :func:`validate_request` and before the pipeline is loaded, plugin by plugin (no wrappers);
    the first refusal wins and the remaining implementations are not called. A refusal raises
    :class:`~provgen.core.errors.PolicyRefused` naming the plugin and the reason (CLI exit status 3) and is
    recorded in the registry (table ``refusals``, audited): nothing is generated, no image file or
    generation record is written.

    :param request: the generation request (frozen), already through every validation.
    :param settings: resolved provgen settings.
    :return: a :class:`provgen.core.policy.PolicyDecision` (``reason``) to refuse, or ``None`` to allow.
        Use :func:`validate_request` instead for requests that are malformed rather than disallowed.
    """


@hookspec
def adapt_pipeline(context: GenerationContext) -> None:
    """Adapt the loaded pipeline for this request (load a LoRA, swap in a ControlNet pipeline, ...).

    Called after the pipeline is loaded and the scheduler set, before :func:`call_arguments`.

    :param context: the mutable generation context. ``context.pipeline`` may be replaced (e.g. by
        ``StableDiffusionControlNetPipeline.from_pipe(context.pipeline, ...)``); pipelines are cached
        between requests, so undo any change to the cached object in :func:`release_pipeline`.
    :return: nothing.
    """


@hookspec
def call_arguments(context: GenerationContext) -> dict[str, Any] | None:
    """Contribute keyword arguments for the diffusers pipeline call (``image=``, ``cross_attention_kwargs=``).

    Called once per request after :func:`adapt_pipeline`, plugin by plugin (no wrappers); provgen has already
    filled ``prompt``, ``negative_prompt``, ``width``, ``height``, ``num_inference_steps``,
    ``guidance_scale``, ``generator``, ``num_images_per_prompt``, ``output_type`` and
    ``callback_on_step_end``; these and ``callback_on_step_end_tensor_inputs`` are reserved.

    :param context: the generation context (read ``context.call_arguments`` to see what is set so far).
    :return: a dict of extra arguments, or ``None``. Two plugins returning the same key, or a plugin
        setting a reserved key, is an error naming the plugin.
    """


@hookspec
def on_step_end(context: GenerationContext, step: int, timestep: float, tensors: dict[str, Any]) -> (
    dict[str, Any] | None
):
    """Observe or steer sampling after each denoising step (diffusers' ``callback_on_step_end``).

    Called after every denoising step of the pipeline call.

    :param context: the generation context.
    :param step: the step index, from 0.
    :param timestep: the scheduler timestep of that step (a float: flow-matching timesteps are fractional).
    :param tensors: the pipeline's callback tensors (``latents``).
    :return: ``None``, or a dict of tensors that replace the pipeline's (e.g. edited ``latents``).
        Set ``context.pipeline._interrupt = True`` to stop early (diffusers' convention).
    """


@hookspec(firstresult=True)
def sample(context: GenerationContext) -> list[Image.Image] | None:
    """Run the sampler and return the images. Stops at the first non-``None`` result.

    The built-in ``diffusers`` plugin implements this last (``trylast``) by calling
    ``context.pipeline(**context.call_arguments)``. Wrap it (``wrapper=True``) for timing or tracing;
    whatever it returns still passes through the provenance layer, which no plugin can skip.

    :param context: the generation context, with ``call_arguments`` complete.
    :return: a list of RGB PIL images (``num_images`` of them), or ``None`` to let the next plugin sample.
    """


@hookspec
def provenance_contribution(context: GenerationContext) -> ProvenanceContribution | None:
    """Add provenance for this request: recipe fields, extra C2PA assertions and input ingredients.

    Called once per request after sampling, post-processing and :func:`release_pipeline`, before
    watermarking and signing; plugin by plugin (no wrappers).

    :param context: the generation context.
    :return: a :class:`provgen.core.context.ProvenanceContribution` (``recipe`` dict merged into the
        ``io.provgen.generation`` assertion under ``plugins_data[<plugin name>]``, ``assertions`` as
        ``{"label", "data"}`` dicts whose labels are outside the reserved ``c2pa.``, ``io.provgen.``,
        ``stds.`` and ``cawg.`` namespaces, ``ingredients`` as
        :class:`provgen.provenance.c2pa_io.Ingredient`, ``actions`` as C2PA action dicts such as
        ``c2pa.edited``; ``c2pa.created``, ``c2pa.opened`` and ``c2pa.watermarked`` are provgen's), or ``None``.
    """


@hookspec
def release_pipeline(context: GenerationContext) -> None:
    """Undo what :func:`adapt_pipeline` did to the cached pipeline.

    Called once per request after sampling, whether it succeeded or failed.

    :param context: the generation context.
    :return: nothing.
    """


# --------------------------------------------------------------------------------------------------------
# Provenance hooks
# --------------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def provide_signer(settings: Settings) -> SigningIdentity | RemoteSigningIdentity | None:
    """Provide the C2PA signing identity (certificate chain, key, algorithm). First non-``None`` wins.

    Called once per engine (and once per worker process), the first time an image is signed. The built-in
    ``local-signer`` plugin answers last: ``--cert/--key`` (``PROVGEN_CERT``/``PROVGEN_KEY``) when set,
    otherwise development keys under ``$PROVGEN_HOME/keys`` (created on first use).

    For a key that must not enter this process (an HSM, a KMS, a signing service), return a
    :class:`provgen.provenance.remote_signing.RemoteSigningIdentity`: the PEM chain and a
    ``sign(data: bytes) -> bytes`` callable that asks the key holder (called from any signing thread, and in
    forked workers). Before the first signature provgen checks the chain and asks ``sign`` for the signature
    of a random challenge, verified with the leaf's public key; an exception raised by ``sign`` fails the
    generation with a ``SigningError`` naming the identity's ``source``, and nothing is written.

    :param settings: resolved provgen settings.
    :return: a :class:`provgen.provenance.keys.SigningIdentity` (a local key),
        a :class:`provgen.provenance.remote_signing.RemoteSigningIdentity` (a key held elsewhere),
        or ``None`` to defer.
    """
