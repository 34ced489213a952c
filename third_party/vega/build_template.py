"""Rebuild dvc_plots.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined, so
`dvc plots show` / `dvc plots diff` render with no network (`.dvc/config`: plots.html_template).

    python third_party/vega/build_template.py            # runs `npm pack` for the pinned versions
    python third_party/vega/build_template.py --from DIR # uses vega-*.tgz already in DIR

The versions are the ones DVC's own page loads from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS),
so the offline page draws what the online one would. Each tarball must match the npm registry's
sha512 integrity recorded below; the build/<name>.min.js and LICENSE of each are taken out of it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name: (version, npm "integrity" of the tarball)
PINS = {
    "vega": ("5.20.2", "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQh"
                       "iwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    "vega-lite": ("5.2.0", "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h"
                           "2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    "vega-embed": ("6.18.2", "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8"
                             "/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
}
# DVC fills these three by plain text replacement anywhere in the page (dvc_render.html.HTML.embed)
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")

HEAD = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- slmake: DVC's plots page (dvc_render's PAGE_HTML) with {libs} inlined
         (BSD-3-Clause: third_party/vega/LICENSE-*), so it renders with no network. It has no
         scripts placeholder on purpose: DVC would put its CDN script tags there.
         Rebuild: python third_party/vega/build_template.py -->
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def _member(tar: tarfile.TarFile, name: str) -> str:
    f = tar.extractfile(f"package/{name}")
    if f is None:
        raise SystemExit(f"{tar.name}: package/{name} missing")
    return f.read().decode("utf-8")


def _script(name: str, version: str, js: str) -> str:
    lines = [ln for ln in js.rstrip("\n").split("\n") if not ln.startswith("//# sourceMappingURL=")]
    js = "\n".join(lines)   # no source map: a browser with devtools open would request it
    for bad in ("</script", "<!--", *PLACEHOLDERS):
        if bad in js.lower():
            raise SystemExit(f"{name}@{version}: the script contains {bad!r}; it cannot be inlined as is")
    return f'    <script type="text/javascript">/* {name}@{version} (BSD-3-Clause) */\n{js}\n    </script>\n'


def build(tarballs: dict[str, Path], out: Path) -> None:
    scripts = []
    for name, (version, integrity) in PINS.items():
        path = tarballs[name]
        digest = "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
        if digest != integrity:
            raise SystemExit(f"{path}: integrity {digest} != the npm registry's {integrity} "
                             f"for {name}@{version}")
        with tarfile.open(path) as tar:
            scripts.append(_script(name, version, _member(tar, f"build/{name}.min.js")))
            (HERE / f"LICENSE-{name}").write_text(_member(tar, "LICENSE"))
    libs = ", ".join(f"{n}@{v}" for n, (v, _) in PINS.items())
    tmp = out.with_suffix(".tmp")
    tmp.write_text(HEAD.replace("{libs}", libs) + "".join(scripts) + TAIL, encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: {out.stat().st_size:,} bytes ({libs})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="src", type=Path, help="folder with the npm tarballs (default: npm pack)")
    ap.add_argument("--out", type=Path, default=HERE / "dvc_plots.html")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = args.src
        if src is None:
            src = Path(tmp)
            specs = [f"{n}@{v}" for n, (v, _) in PINS.items()]
            subprocess.run(["npm", "pack", "--silent", *specs], cwd=src, check=True,
                           stdout=subprocess.DEVNULL)
        build({n: src / f"{n}-{v}.tgz" for n, (v, _) in PINS.items()}, args.out)


if __name__ == "__main__":
    main()
