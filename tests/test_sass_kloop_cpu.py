"""scripts/sass_kloop.py on a hand-written SASS listing (the nvdisasm -c form): the counts it reports for a K loop."""

import importlib.util
import pathlib

_SPEC = importlib.util.spec_from_file_location(
    "sass_kloop", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sass_kloop.py")
sass_kloop = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sass_kloop)

LISTING = """.text._Z6kernelv:
        /*0000*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR16], R24 ;
        /*0010*/              @!P0 BRA `(.L_x_1) ;
        /*0020*/                   UIADD3 UR8, UR15, 0x2, URZ ;
        /*0030*/                   WARPGROUP.ARRIVE ;
        /*0040*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], RZ, !UPT, gsb0 ;
        /*0050*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0060*/                   FFMA R1, R24, R2, R1 ;
        /*0070*/                   FFMA R3, R25, R2, R3 ;
        /*0080*/              @!P0 SYNCS.ARRIVE.TRANS64.RED.A1T0 RZ, [R24+URZ], RZ ;
        /*0090*/                   WARPGROUP.ARRIVE ;
        /*00a0*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], RZ, !UPT, gsb0 ;
.text._Z5otherv:
        /*0000*/                   FADD R1, R2, R3 ;
"""


def test_counts_of_a_k_loop(tmp_path):
    path = tmp_path / "k.sass"
    path.write_text(LISTING)
    found = sass_kloop.kernels(str(path))
    assert list(found) == ["_Z6kernelv", "_Z5otherv"]
    ins = found["_Z6kernelv"]
    assert [len(g) for g in sass_kloop.gaps(ins, "SYNCS.PHASECHK.TRANS64.TRYWAIT")] == [2]
    (depbar,) = sass_kloop.gaps(ins, "WARPGROUP.DEPBAR")
    assert [sass_kloop.opcode(x) for x in depbar] == ["FFMA", "FFMA", "SYNCS.ARRIVE.TRANS64.RED.A1T0"]


def test_main_skips_kernels_without_wgmma(tmp_path, capsys):
    path = tmp_path / "k.sass"
    path.write_text(LISTING)
    sass_kloop.main(str(path))
    out = capsys.readouterr().out
    assert "_Z6kernelv" in out and "_Z5otherv" not in out
    assert "full wait -> first WGMMA: [2]" in out and "WGMMA wait -> next issue: ['3 (2 FFMA)']" in out
