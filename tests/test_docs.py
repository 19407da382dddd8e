import os
import runpy

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_errors_doc_is_current():
    gen = runpy.run_path(os.path.join(ROOT, "scripts", "gen_errors_doc.py"))
    with open(os.path.join(ROOT, "docs", "errors.md")) as f:
        assert f.read() == gen["render"](), "run: .venv/bin/python scripts/gen_errors_doc.py"
