"""Every hook in provgen.core.hookspecs, exercised through a real plugin manager and real generations.

test_every_hook_has_a_test (below) fails when a hook is added without a ``test_hook_<name>`` here.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from provgen.core import Engine, ProvenanceContribution, ValidationError, hookimpl, hookspecs
from provgen.core.errors import PluginHookError, PluginLoadError
from provgen.core.plugins import make_plugin_manager, plugin_infos, reset_plugin_manager
from provgen.core.registries import conditioners
from provgen.provenance.c2pa_io import Ingredient, read_credentials

KW = dict(width=128, height=128, num_inference_steps=2, seed=11)


def engine_with(*plugins: object) -> Engine:
    pm = make_plugin_manager(load_entrypoints=False)
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=getattr(plugin, "name", f"test-plugin-{index}"))
    return Engine(plugin_manager=pm, progress=False)


def run(engine: Engine, tiny_sd_dir: Path, out: Path, **fields: object):  # type: ignore[no-untyped-def]
    return engine.generate(**{"prompt": "a test", "model": str(tiny_sd_dir), "output_dir": out, **KW, **fields})


def count_assets(home: Path) -> int:
    db = home / "registry.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM assets").fetchone()[0]


def test_every_hook_has_a_test() -> None:
    hooks = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "provgen_spec")]
    assert len(hooks) >= 13
    source = Path(__file__).read_text()
    missing = [hook for hook in hooks if f"def test_hook_{hook}" not in source]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_hook_register_schedulers(tiny_sd_dir: Path, tmp_path: Path) -> None:
    class Plugin:
        name = "my-schedulers"

        @hookimpl
        def register_schedulers(self, register):  # type: ignore[no-untyped-def]
            register("ddim_trailing", "DDIMScheduler", config={"timestep_spacing": "trailing"},
                     description="DDIM with trailing spacing")

    engine = engine_with(Plugin())
    assert "ddim_trailing" in engine.schedulers(str(tiny_sd_dir))
    result = run(engine, tiny_sd_dir, tmp_path, scheduler="ddim_trailing")
    assert result.recipe["scheduler"]["config"]["timestep_spacing"] == "trailing"


def test_hook_register_models(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from provgen.core.models import model_content_hash

    class Plugin:
        name = "tiny-models"

        @hookimpl
        def register_models(self, register):  # type: ignore[no-untyped-def]
            register("tiny", tiny_sd_dir, description="a tiny random SD")

    engine = engine_with(Plugin())
    result = run(engine, tiny_sd_dir, tmp_path, model="tiny")
    assert result.model_id == "tiny" and result.recipe["model"]["id"] == "tiny"
    assert result.model_hash == model_content_hash(tiny_sd_dir)
    assert "ddim" in engine.schedulers("tiny")


def test_hook_register_models_guidance_scale(tiny_sd_dir: Path, tmp_path: Path) -> None:
    """A model registered with a guidance scale gives it to requests that name none; a bad one names the plugin."""
    from provgen.core.errors import PluginHookError

    class Plugin:
        name = "tiny-models"

        @hookimpl
        def register_models(self, register):  # type: ignore[no-untyped-def]
            register("tiny", tiny_sd_dir, guidance_scale=2.0)

    fields = {k: v for k, v in KW.items() if k != "guidance_scale"}
    engine = engine_with(Plugin())
    result = engine.generate(prompt="a test", model="tiny", output_dir=tmp_path, **fields)
    assert result.recipe["guidance_scale"] == 2.0

    class Broken:
        name = "broken-models"

        @hookimpl
        def register_models(self, register):  # type: ignore[no-untyped-def]
            register("tiny", tiny_sd_dir, guidance_scale=500)

    with pytest.raises(PluginHookError, match="plugin `broken-models` failed in hook `register_models`: .*0 to 100"):
        engine_with(Broken()).generate(prompt="a test", model="tiny", output_dir=tmp_path, **fields)


def test_hook_register_conditioners() -> None:
    class Plugin:
        @hookimpl
        def register_conditioners(self, register):  # type: ignore[no-untyped-def]
            register("sketch", description="sketch guidance")

    engine = engine_with(Plugin())
    entry = conditioners(engine.pm)["sketch"]
    assert entry.item.description == "sketch guidance" and entry.plugin == "test-plugin-0"
    from provgen.core.registries import check_plugin_options
    from provgen.core.request import GenerationRequest

    check_plugin_options(engine.pm, GenerationRequest(prompt="x", plugin_options={"sketch": {}}).plugin_options)
    with pytest.raises(ValidationError,
                       match="no conditioner named 'scribble'; installed: controlnet, ip_adapter, lora, sketch"):
        engine.generate(prompt="x", model="/nonexistent", plugin_options={"scribble": {}})


def test_hook_register_postprocessors(tiny_sd_dir: Path, tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def register_postprocessors(self, register):  # type: ignore[no-untyped-def]
            register("invert", lambda image, args: ImageOps.invert(image.convert("RGB")))

    engine = engine_with(Plugin())
    plain = run(engine, tiny_sd_dir, tmp_path / "a").images[0].open().convert("RGB")
    inverted = run(engine, tiny_sd_dir, tmp_path / "b", postprocess=("invert",))
    got = np.asarray(inverted.images[0].open().convert("RGB"), dtype=np.int16)
    expected = 255 - np.asarray(plain, dtype=np.int16)
    assert np.abs(got - expected).mean() < 4  # equal up to the two (different) watermarks
    assert inverted.recipe["postprocess"] == [{"name": "invert", "args": "", "plugin": "test-plugin-0",
                                               "version": None}]
    with pytest.raises(ValidationError, match="unknown post-processor 'nope'; available: color, invert, resize, "
                                              "sharpen, upscale"):
        run(engine, tiny_sd_dir, tmp_path / "c", postprocess=("nope",))


class LsbMark:
    """A toy watermark for the test: payload in the blue channel's low bits of the first row."""

    name = "test-lsb/1"
    payload_bits = 48
    soft_binding_alg = "io.provgen.test.lsb"

    def embed(self, image, payload):  # type: ignore[no-untyped-def]
        pixels = np.array(image.convert("RGB"))
        bits = [(payload >> i) & 1 for i in range(48)]
        pixels[0, :48, 2] = (pixels[0, :48, 2] & 0xFE) | np.array(bits, dtype=np.uint8)
        return Image.fromarray(pixels)

    def decode(self, image):  # type: ignore[no-untyped-def]
        from provgen.provenance.watermark import WatermarkReading

        row = np.asarray(image.convert("RGB"))[0, :48, 2] & 1
        return WatermarkReading(self.name, int(sum(int(b) << i for i, b in enumerate(row))), 1.0)


def test_hook_register_watermarks(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    class Plugin:
        @hookimpl
        def register_watermarks(self, register):  # type: ignore[no-untyped-def]
            register(LsbMark())

    engine = engine_with(Plugin())
    engine.settings = engine.provenance.settings = engine.settings.replace(watermark_method="test-lsb/1")
    image = run(engine, tiny_sd_dir, tmp_path).images[0]
    assert image.watermark_method == "test-lsb/1"
    assert LsbMark().decode(image.open()).payload == image.watermark_id
    with sqlite3.connect(provgen_home / "registry.db") as connection:
        assert connection.execute("SELECT watermark_method FROM assets").fetchone() == ("test-lsb/1",)


def test_hook_register_commands() -> None:
    from provgen.cli.main import build_cli

    class Plugin:
        @hookimpl
        def register_commands(self, cli):  # type: ignore[no-untyped-def]
            @cli.command()
            def hello() -> None:
                """Say hello."""
                click.echo("hello from a plugin")

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(Plugin(), name="hello-plugin")
    reset_plugin_manager(pm)
    result = CliRunner().invoke(build_cli(), ["hello"])
    assert result.exit_code == 0 and result.output == "hello from a plugin\n"
    assert "hello" in CliRunner().invoke(build_cli(), ["--help"]).output


def test_hook_validate_request(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    class Blocklist:
        @hookimpl
        def validate_request(self, request, settings):  # type: ignore[no-untyped-def]
            if "forbidden" in request.prompt:
                raise ValidationError("prompt", "refused by policy: contains a blocked word")

    engine = engine_with(Blocklist())
    with pytest.raises(ValidationError, match="refused by policy"):
        run(engine, tiny_sd_dir, tmp_path / "out", prompt="a forbidden thing")
    assert not (tmp_path / "out").exists()
    assert count_assets(provgen_home) == 0
    assert run(engine, tiny_sd_dir, tmp_path / "out", prompt="an allowed thing").images


def test_hook_check_policy(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    from provgen.core.errors import PolicyRefused
    from provgen.core.policy import PolicyDecision

    asked = []

    class NoCats:
        name = "no-cats"

        @hookimpl
        def check_policy(self, request, settings):  # type: ignore[no-untyped-def]
            asked.append("no-cats")
            return PolicyDecision("cats are not allowed here") if "cat" in request.prompt else None

    class NoDogs:
        name = "no-dogs"

        @hookimpl(tryfirst=True)
        def check_policy(self, request):  # type: ignore[no-untyped-def]
            asked.append("no-dogs")
            return PolicyDecision("no dogs") if "dog" in request.prompt else None

    engine = engine_with(NoCats(), NoDogs())
    with pytest.raises(PolicyRefused, match="refused by policy plugin `no-dogs`: no dogs") as info:
        run(engine, tiny_sd_dir, tmp_path / "out", prompt="a cat and a dog", user="alice")
    assert asked == ["no-dogs"]  # the first refusal wins: no-cats is not asked
    assert info.value.plugin == "no-dogs" and info.value.reason == "no dogs" and info.value.exit_code == 3
    asked.clear()
    with pytest.raises(PolicyRefused, match="`no-cats`: cats are not allowed here"):
        run(engine, tiny_sd_dir, tmp_path / "out", prompt="a cat")
    assert asked == ["no-dogs", "no-cats"]
    assert not (tmp_path / "out").exists() and count_assets(provgen_home) == 0
    with sqlite3.connect(provgen_home / "registry.db") as connection:
        refused = connection.execute("SELECT plugin, reason, prompt, requester FROM refusals ORDER BY created_at")
        assert refused.fetchall() == [("no-dogs", "no dogs", "a cat and a dog", "alice"),
                                      ("no-cats", "cats are not allowed here", "a cat", "tester")]
    assert run(engine, tiny_sd_dir, tmp_path / "out", prompt="a bird").images  # None lets the request through

    class Sloppy:
        name = "sloppy"

        @hookimpl
        def check_policy(self):  # type: ignore[no-untyped-def]
            return "no"

    with pytest.raises(PluginHookError, match="plugin `sloppy` failed in hook `check_policy`: TypeError: must "
                                              "return a PolicyDecision or None, not str"):
        run(engine_with(Sloppy()), tiny_sd_dir, tmp_path / "out2")


def test_hook_adapt_pipeline(tiny_sd_dir: Path, tmp_path: Path) -> None:
    seen = []

    class Plugin:
        @hookimpl
        def adapt_pipeline(self, context):  # type: ignore[no-untyped-def]
            context.pipeline.provgen_test_marker = True
            seen.append(type(context.pipeline).__name__)

        @hookimpl
        def release_pipeline(self, context):  # type: ignore[no-untyped-def]
            del context.pipeline.provgen_test_marker

    engine = engine_with(Plugin())
    run(engine, tiny_sd_dir, tmp_path)
    _, pipeline = engine.load(str(tiny_sd_dir))
    assert seen == ["StableDiffusionPipeline"]
    assert not hasattr(pipeline, "provgen_test_marker")  # released


def test_hook_release_pipeline(tiny_sd_dir: Path, tmp_path: Path) -> None:
    released = []

    class Plugin:
        @hookimpl
        def adapt_pipeline(self, context):  # type: ignore[no-untyped-def]
            raise RuntimeError("adapter exploded")

        @hookimpl
        def release_pipeline(self, context):  # type: ignore[no-untyped-def]
            released.append(context.request.prompt)

    engine = engine_with(Plugin())
    with pytest.raises(PluginHookError):
        run(engine, tiny_sd_dir, tmp_path)
    assert released == ["a test"]  # called even though the generation failed


def test_hook_call_arguments(tiny_sd_dir: Path, tmp_path: Path) -> None:
    class Rescale:
        name = "rescale"

        @hookimpl
        def call_arguments(self, context):  # type: ignore[no-untyped-def]
            assert context.call_arguments["num_inference_steps"] == 2
            return {"guidance_rescale": 0.7}

    class Clash:
        name = "clash"

        @hookimpl
        def call_arguments(self, context):  # type: ignore[no-untyped-def]
            return {"guidance_rescale": 0.1}

    class Override:
        name = "override"

        @hookimpl
        def call_arguments(self, context):  # type: ignore[no-untyped-def]
            return {"prompt": "something else"}

    capture_plain, capture_rescaled = Capture(), Capture()
    run(engine_with(capture_plain), tiny_sd_dir, tmp_path / "a")
    run(engine_with(Rescale(), capture_rescaled), tiny_sd_dir, tmp_path / "b")
    assert not np.array_equal(capture_plain.array(), capture_rescaled.array())
    with pytest.raises(PluginHookError, match="also set by plugin `rescale`|also set by plugin `clash`"):
        run(engine_with(Rescale(), Clash()), tiny_sd_dir, tmp_path / "c")
    with pytest.raises(PluginHookError, match="plugin `override`.*'prompt' is set by provgen itself"):
        run(engine_with(Override()), tiny_sd_dir, tmp_path / "d")


class Capture:
    name = "capture"

    def __init__(self) -> None:
        self.images: list = []

    @hookimpl(wrapper=True)
    def sample(self, context):  # type: ignore[no-untyped-def]
        images = yield
        self.images = [image.copy() for image in images]
        return images

    def array(self) -> np.ndarray:
        return np.asarray(self.images[0])


def test_hook_on_step_end(tiny_sd_dir: Path, tmp_path: Path) -> None:
    steps = []

    class Counter:
        @hookimpl
        def on_step_end(self, context, step, timestep, tensors):  # type: ignore[no-untyped-def]
            steps.append((step, timestep, tuple(tensors["latents"].shape)))

    class ZeroLatents:
        @hookimpl
        def on_step_end(self, tensors):  # type: ignore[no-untyped-def]
            return {"latents": tensors["latents"] * 0}

    counting, zeroed = Capture(), Capture()
    run(engine_with(Counter(), counting), tiny_sd_dir, tmp_path / "a", num_inference_steps=3)
    assert [s for s, _, _ in steps] == [0, 1, 2] and steps[0][2] == (1, 4, 16, 16)
    assert steps[0][1] > steps[-1][1]  # timesteps go down
    run(engine_with(ZeroLatents(), zeroed), tiny_sd_dir, tmp_path / "b", num_inference_steps=3)
    assert not np.array_equal(counting.array(), zeroed.array())
    assert np.asarray(zeroed.images[0]).std() < np.asarray(counting.images[0]).std()


def test_hook_sample(tiny_sd_dir: Path, tmp_path: Path) -> None:
    """A plugin that samples by itself still cannot skip the provenance layer."""
    class Flat:
        @hookimpl
        def sample(self, context):  # type: ignore[no-untyped-def]
            return [Image.new("RGB", (context.width, context.height), (90, 120, 160))
                    for _ in context.seeds]

    timings = []

    class Timer:
        @hookimpl(wrapper=True)
        def sample(self, context):  # type: ignore[no-untyped-def]
            import time

            start = time.perf_counter()
            result = yield
            timings.append(time.perf_counter() - start)
            return result

    result = run(engine_with(Flat(), Timer()), tiny_sd_dir, tmp_path)
    image = result.images[0]
    report = read_credentials(image.path.read_bytes(), "image/png")
    assert report.state in ("Trusted", "Valid") and report.assertion("c2pa.soft-binding")
    pixels = np.asarray(image.open().convert("RGB"), dtype=np.int16)
    assert np.abs(pixels - np.array([90, 120, 160])).mean() < 3 and pixels.std() > 0  # flat + watermark
    assert len(timings) == 1 and timings[0] >= 0


def test_hook_provenance_contribution(tiny_sd_dir: Path, tmp_path: Path) -> None:
    reference = Image.effect_mandelbrot((64, 64), (-2, -1.25, 0.5, 1.25), 32).convert("RGB")
    import io

    buffer = io.BytesIO()
    reference.save(buffer, "PNG")

    class Contributor:
        name = "contributor"

        @hookimpl
        def provenance_contribution(self, context):  # type: ignore[no-untyped-def]
            return ProvenanceContribution(
                recipe={"style": "test", "strength": 0.5},
                assertions=[{"label": "com.example.review", "data": {"reviewed": True}}],
                ingredients=[Ingredient(title="reference.png", mime="image/png", data=buffer.getvalue(),
                                        relationship="inputTo", label="reference")],
            )

    result = run(engine_with(Contributor()), tiny_sd_dir, tmp_path)
    report = read_credentials(result.images[0].path.read_bytes(), "image/png")
    assert report.state in ("Trusted", "Valid"), report.codes
    assert report.assertion("io.provgen.generation")["plugins_data"]["contributor"] == {"style": "test",
                                                                                         "strength": 0.5}
    assert report.assertion("com.example.review") == {"reviewed": True}
    ingredients = report.manifest["ingredients"]
    assert [(i["title"], i["relationship"]) for i in ingredients] == [("reference.png", "inputTo")]

    class Reserved:
        name = "reserved"

        @hookimpl
        def provenance_contribution(self, context):  # type: ignore[no-untyped-def]
            return ProvenanceContribution(assertions=[{"label": "c2pa.actions", "data": {}}])

    with pytest.raises(PluginHookError, match="plugin `reserved`.*reserved"):
        run(engine_with(Reserved()), tiny_sd_dir, tmp_path / "r")


def test_hook_provide_signer(tiny_sd_dir: Path, tmp_path: Path) -> None:
    from provgen.provenance.keys import init_dev_keys, load_dev_identity

    init_dev_keys(tmp_path / "acme-keys", organization="Acme Images Ltd")

    class AcmeSigner:
        @hookimpl
        def provide_signer(self, settings):  # type: ignore[no-untyped-def]
            return load_dev_identity(tmp_path / "acme-keys")

    result = run(engine_with(AcmeSigner()), tiny_sd_dir, tmp_path / "out")
    data = result.images[0].path.read_bytes()
    report = read_credentials(data, "image/png")
    assert "Acme Images Ltd" in json.dumps(report.manifest["signature_info"])
    anchors = (tmp_path / "acme-keys" / "ca.pem").read_bytes()
    assert read_credentials(data, "image/png", trust_anchors_pem=anchors).state == "Trusted"


def test_plugin_failure_names_plugin_and_hook_and_writes_nothing(tiny_sd_dir: Path, tmp_path: Path,
                                                                  provgen_home: Path) -> None:
    class Broken:
        name = "broken-contrib"

        @hookimpl
        def provenance_contribution(self, context):  # type: ignore[no-untyped-def]
            return {"not": "a contribution"}["missing"]

    engine = engine_with(Broken())
    with pytest.raises(PluginHookError) as info:
        run(engine, tiny_sd_dir, tmp_path / "out")
    assert info.value.plugin == "broken-contrib" and info.value.hook == "provenance_contribution"
    assert "KeyError" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert count_assets(provgen_home) == 0
    engine.pm.unregister(name="broken-contrib")
    assert run(engine, tiny_sd_dir, tmp_path / "out").images  # the engine stays usable


def test_step_callback_failure_is_attributed(tiny_sd_dir: Path, tmp_path: Path) -> None:
    class Exploding:
        name = "exploding"

        @hookimpl
        def on_step_end(self, step):  # type: ignore[no-untyped-def]
            if step == 1:
                raise ValueError("boom at step 1")

    with pytest.raises(PluginHookError, match="plugin `exploding` failed in hook `on_step_end`"):
        run(engine_with(Exploding()), tiny_sd_dir, tmp_path)


# ---------------------------------------------------------------- third-party entry points


def make_distribution(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[provgen]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from provgen.core import hookimpl

    @hookimpl
    def register_postprocessors(register):
        register("noop", lambda image, args: image, description="does nothing")
"""


def test_entry_point_plugins_load_and_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(tmp_path, "provgen_goodplug", {"goodplug": "goodplug_mod"}, {"goodplug_mod": GOOD})
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = make_plugin_manager()
    infos = {info.name: info for info in plugin_infos(pm)}
    assert infos["goodplug"].enabled and infos["goodplug"].version == "1.2.3"
    assert infos["goodplug"].distribution == "provgen_goodplug"
    assert infos["goodplug"].hooks == ("register_postprocessors",)
    assert infos["schedulers"].builtin
    monkeypatch.setenv("PROVGEN_PLUGINS", "someotherplugin")
    infos = {info.name: info for info in plugin_infos(make_plugin_manager())}
    assert infos["goodplug"].enabled is False
    monkeypatch.setenv("PROVGEN_PLUGINS", "goodplug")
    assert make_plugin_manager().get_plugin("goodplug") is not None
    monkeypatch.delenv("PROVGEN_PLUGINS")
    monkeypatch.setenv("PROVGEN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert make_plugin_manager().get_plugin("goodplug") is None


def test_broken_entry_point_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(tmp_path, "provgen_badplug", {"badplug": "badplug_mod"},
                      {"badplug_mod": "raise ImportError('needs libfoo')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match="plugin `badplug` \\(distribution `provgen_badplug` 1.2.3\\) "
                                              "failed to load: ImportError: needs libfoo"):
        make_plugin_manager()
    monkeypatch.setenv("PROVGEN_PLUGINS", "")
    assert make_plugin_manager().get_plugin("badplug") is None  # can be worked around


def test_unknown_hook_name_in_plugin_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(tmp_path, "provgen_typo", {"typo": "typo_mod"}, {"typo_mod": """
        from provgen.core import hookimpl

        @hookimpl
        def register_schedulerz(register):
            pass
    """})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match="plugin `typo`.*register_schedulerz"):
        make_plugin_manager()


def test_cli_plugins_list_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provgen.cli.main import build_cli

    make_distribution(tmp_path, "provgen_goodplug", {"goodplug": "goodplug_mod"}, {"goodplug_mod": GOOD})
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(build_cli(), ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"schedulers", "diffusers", "grid-watermark", "local-signer", "goodplug"} <= set(listed)
    assert listed["diffusers"]["hooks"] == ["sample"]
    assert listed["goodplug"]["distribution"] == "provgen_goodplug"


def test_cli_broken_plugin_gives_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provgen.cli.main import build_cli

    make_distribution(tmp_path, "provgen_badplug", {"badplug": "badplug_mod"},
                      {"badplug_mod": "raise ImportError('needs libfoo')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(build_cli(), ["plugins", "list"])
    assert result.exit_code == 1
    assert "plugin `badplug`" in result.stderr and "Traceback" not in result.stderr


def test_failing_postprocessor_is_attributed(tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path) -> None:
    class Plugin:
        name = "divider"

        @hookimpl
        def register_postprocessors(self, register):  # type: ignore[no-untyped-def]
            register("divide", lambda image, args: image.resize((1 // int(args or 0), 1)))

    with pytest.raises(PluginHookError, match="plugin `divider` failed in hook `post-processor 'divide'`: "
                                              "ZeroDivisionError"):
        run(engine_with(Plugin()), tiny_sd_dir, tmp_path / "out", postprocess=("divide",))
    assert not (tmp_path / "out").exists() and count_assets(provgen_home) == 0


def test_wrapping_a_per_plugin_hook_is_refused(tiny_sd_dir: Path, tmp_path: Path) -> None:
    class Wrapper:
        name = "wrapper"

        @hookimpl(wrapper=True)
        def call_arguments(self, context):  # type: ignore[no-untyped-def]
            return (yield)

    with pytest.raises(PluginHookError, match="plugin `wrapper`.*cannot be wrapped"):
        run(engine_with(Wrapper()), tiny_sd_dir, tmp_path)


def test_plugin_registered_late_is_seen() -> None:
    from provgen.core.registries import postprocessors

    engine = engine_with()
    assert "late" not in postprocessors(engine.pm)

    class Late:
        @hookimpl
        def register_postprocessors(self, register):  # type: ignore[no-untyped-def]
            register("late", lambda image, args: image)

    engine.pm.register(Late(), name="late-plugin")
    assert postprocessors(engine.pm)["late"].plugin == "late-plugin"


def test_registering_a_name_twice_names_both_plugins() -> None:
    from provgen.core.errors import PluginError

    class Again:
        name = "again"

        @hookimpl
        def register_schedulers(self, register):  # type: ignore[no-untyped-def]
            register("ddim", "DDIMScheduler")

    from provgen.core.schedulers import registered_schedulers

    pattern = "`ddim` is registered twice .* plugins `(again` and `schedulers|schedulers` and `again)`"
    with pytest.raises(PluginError, match=pattern):
        registered_schedulers(engine_with(Again()).pm)


_FAILING_HOOKS = {
    "validate_request": "request, settings",
    "check_policy": "request, settings",
    "adapt_pipeline": "context",
    "call_arguments": "context",
    "on_step_end": "context, step, timestep, tensors",
    "sample": "context",
    "release_pipeline": "context",
    "provenance_contribution": "context",
    "provide_signer": "settings",
}


@pytest.mark.parametrize("hook", sorted(_FAILING_HOOKS))
def test_a_plugin_raising_in_any_generation_hook_is_named_writes_nothing_and_the_engine_recovers(
    hook: str, tiny_sd_dir: Path, tmp_path: Path, provgen_home: Path
) -> None:
    """The plugin raises the first time the hook runs, then behaves: the same engine serves the next request."""
    state = {"raised": False}

    def once(*_: object) -> None:
        if not state["raised"]:
            state["raised"] = True
            raise RuntimeError(f"boom in {hook}")

    namespace: dict[str, object] = {"hookimpl": hookimpl, "once": once}
    exec(  # a plugin class with exactly one implementation, of `hook`, with the spec's parameter names
        f"class Flaky:\n    name = 'flaky'\n    @hookimpl\n    def {hook}(self, {_FAILING_HOOKS[hook]}):\n"
        f"        once()\n        return None\n",
        namespace,
    )
    engine = engine_with(namespace["Flaky"]())
    with pytest.raises(PluginHookError) as info:
        run(engine, tiny_sd_dir, tmp_path / "out")
    assert info.value.plugin == "flaky" and hook in info.value.hook and f"boom in {hook}" in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert count_assets(provgen_home) == 0
    result = run(engine, tiny_sd_dir, tmp_path / "out")  # same engine, same plugins
    assert len(result.images) == 1 and result.images[0].path.is_file() and count_assets(provgen_home) == 1
