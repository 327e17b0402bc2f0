"""``general.file_type`` as llama.cpp names it.

The names are ik_llama.cpp's ``llama_model_ftype_name`` (src/llama.cpp) for the
``LLAMA_FTYPE_*`` numbers of its include/llama.h (commit 8337e4cd), copied as they are so
that ``iqk info`` prints what llama-server and llama-quantize print for the same file -
including ik's "IQ3_K - 3.4325 bpw" (the blocks hold 3.4375 bits per weight).
"""

from __future__ import annotations

LLAMA_FTYPE_GUESSED = 1024  # set when the loader guessed the type (not in the file)

LLAMA_FTYPE_NAMES: dict[int, str] = {
    0: "all F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K - Medium",
    11: "Q3_K - Small",
    12: "Q3_K - Medium",
    13: "Q3_K - Large",
    14: "Q4_K - Small",
    15: "Q4_K - Medium",
    16: "Q5_K - Small",
    17: "Q5_K - Medium",
    18: "Q6_K",
    19: "IQ2_XXS - 2.0625 bpw",
    20: "IQ2_XS - 2.3125 bpw",
    21: "Q2_K - Small",
    22: "IQ3_XS - 3.3 bpw",
    23: "IQ3_XXS - 3.0625 bpw",
    24: "IQ1_S - 1.5625 bpw",
    25: "IQ4_NL - 4.5 bpw",
    26: "IQ3_S - 3.4375 bpw",
    27: "IQ3_S mix - 3.66 bpw",
    28: "IQ2_S - 2.5 bpw",
    29: "IQ2_M - 2.7 bpw",
    30: "IQ4_XS - 4.25 bpw",
    31: "IQ1_M - 1.75 bpw",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    38: "MXFP4 - 4.25 bpw",
    135: "Q6_0",
    136: "IQ1_BN - 1.625 bpw Bitnet",
    137: "IQ2_BN - 2.00 bpw Bitnet",
    138: "IQ2_K - 2.375 bpw",
    139: "IQ3_K - 3.4325 bpw",
    140: "IQ4_K - 4.5 bpw",
    141: "IQ5_K - 5.5 bpw",
    142: "IQ6_K - 6.6 bpw",
    145: "IQ4_KS - 4.25 bpw",
    146: "IQ3_KL - 4 bpw",
    147: "IQ2_KS - 2.1875 bpw",
    148: "IQ4_KSS - 4.0 bpw",
    149: "Q8_KV",
    150: "IQ5_KS - 5.25 bpw",
    151: "IQ2_KT - 2.125 bpw",
    152: "IQ3_KT - 3.125 bpw",
    153: "IQ4_KT - 4.0 bpw",
    154: "IQ3_KS - 3.1875 bpw",
    155: "IQ2_KL - 2.6875 bpw",
    156: "IQ1_KT - 1.75 bpw",
    202: "Q4_0_R8 - 4.5 bpw",
    207: "Q8_0_R8 - 8.5 bpw",
    208: "Q5_0_R4 - 5.5 bpw",
    210: "Q2_K_R4",
    211: "Q3_K_R4",
    214: "Q4_K_R4",
    216: "Q5_K_R4",
    218: "Q6_K_R4",
    219: "IQ2_XXS_R4 - 2.0625 bpw",
    220: "IQ2_XS_R4 - 2.3125 bpw",
    223: "IQ3_XXS_R4 - 3.0625 bpw",
    224: "IQ1_S_R4 - 1.5 bpw",
    225: "IQ4_NL_R4 - 4.5 bpw",
    226: "IQ3_S_R4 - 3.4375 bpw",
    229: "IQ2_M_R4 - 2.7 bpw",
    230: "IQ4_XS_R8 - 4.25 bpw",
    231: "IQ1_M_R4 - 1.75 bpw",
    232: "BF16_R16",
    335: "Q6_0_R4 - 6.5 bpw",
    337: "IQ2_BN_R4 - 2.00 bpw Bitnet",
    338: "IQ2_K_R4 - 2.375 bpw",
    339: "IQ3_K_R4 - 3.4325 bpw",
    340: "IQ4_K_R4 - 4.5 bpw",
    341: "IQ5_K_R4 - 5.5 bpw",
    345: "IQ4_KS_R4 - 4.25 bpw",
    350: "IQ5_KS_R4 - 5.25 bpw",
    398: "Q8_KV_R8",
    399: "Q8_K_R8",
}


def ftype_name(ftype: int) -> str:
    """llama.cpp's description of a ``general.file_type`` value, e.g. "IQ4_K - 4.5 bpw"."""
    if ftype & LLAMA_FTYPE_GUESSED:
        return ftype_name(ftype & ~LLAMA_FTYPE_GUESSED) + " (guessed)"
    return LLAMA_FTYPE_NAMES.get(ftype, "unknown, may not work")
