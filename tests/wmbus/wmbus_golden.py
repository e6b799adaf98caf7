# ruff: noqa: E501 - telegram hex test vectors are kept on one line, as published
"""Real public wM-Bus telegrams with their public keys and the totals their sources state.

Sources (telegram hex copied as test vectors; licence of the source noted):

* OMS Specification Vol. 2 Annex N examples (gas meter ELS 12345678, HCA QDS 55667788, water CEN
  12345678, keys 0102..0F11 and 0001..0E0F), as used in the test file of ISFH/ioBroker.wmbus
  (GPL-2.0), "OMS Examples". These frames still carry their link-layer CRCs.
* wmbusmeters/wmbusmeters (GPL-3.0-or-later): simulations/serial_aes.msg and tests/test_analyze.sh
  (Kamstrup Multical 21 76348799, AES-CTR, key 28F6..02AE); src/driver_multical21.cc,
  src/driver_kamheat.cc, src/driver_qualcosonic.cc, src/driver_hydrus.cc ``// Test:`` lines
  (telegrams already decrypted by wmbusmeters, ``NOKEY``; the ``_`` marks where plain data starts);
  tests/test_addresses.sh.
* ISFH/ioBroker.wmbus (GPL-2.0) test file, "Short Telegram Test" (Kamstrup compact frames, from the
  jMBus test data).
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple


class Golden(NamedTuple):
    name: str
    hex: str
    key_id: str | None
    key: str | None
    quantity: str  # "volume" or "energy": the total the source states
    total: Decimal  # in m3 or Wh (J converted by the test)
    source: str
    features: frozenset[str]


def _g(name: str, hex_: str, key_id: str | None, key: str | None, quantity: str, total: str, source: str,
       *features: str) -> Golden:  # fmt: skip
    return Golden(
        name, hex_.replace("_", ""), key_id, key, quantity, Decimal(total), source, frozenset(features)
    )


KAM21_KEY = "28F64A24988064A079AA2C807D6102AE"
OMS_KEY = "000102030405060708090A0B0C0D0E0F"

# Order matters: a compact frame follows the full frame its layout is learned from.
GOLDEN: tuple[Golden, ...] = (
    _g("oms_gas_mode5_crc_a", "2E44931578563412330333637A2A0020255923C95AAA26D1B2E7493BC2AD013EC4A6F6D3529B520EDFF0EA6DEFC955B29D6D69EBF3EC8A",
       "12345678", "0102030405060708090A0B0C0D0E0F11", "volume", "28504.27", "OMS vol2 annex N", "format_a", "ci7a", "mode5"),
    _g("oms_gas_mode7_afl_ell", "434493157856341233037AC98C2075900F002C25B30A000021924D4FBA372FB66E017A75002007109058475F4BC9D1281DF878B80A1B0F98B629024AAC7279429398BFC549233C0140829B93BAA1",
       "12345678", OMS_KEY, "volume", "28504.27", "OMS vol2 annex N", "format_a", "ci8c", "ci90", "ci7a", "mode7"),
    _g("oms_gas_mode7_radio_adapter", "53082448443322110337D0468E80753A63665544330A31900F002C25E00AB30A0000AF5D74DF73A600D972785634C027129315330375002007109058475F4BC955CF1DF878B80A1B0F98B629024AAC7279429398BFC549233C0140829B93BAA1",
       "12345678", OMS_KEY, "volume", "28504.27", "OMS vol2 annex N", "format_a", "ci8e", "ci90", "ci72", "mode7"),
    _g("oms_hca_mode5_partial", "2D44934444332211553769EF7288776655934455080004100500DFE227F9A782146D1513581CD2F83F39040CFD1040C4785634128134",
       "55667788", OMS_KEY, "hca", "1234", "OMS vol2 annex N", "format_a", "ci72", "mode5"),
    _g("oms_water_format_b", "1444AE0C7856341201078C2027780B134365877AC5", None, None, "volume", "876.543",
       "OMS vol2 annex N", "format_b", "ci8c", "ci78", "mode0"),
    _g("kamstrup_mc21_ctr_full", "2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24",
       "76348799", KAM21_KEY, "volume", "6.408", "wmbusmeters simulations/serial_aes.msg", "ci8d", "ell_ctr", "ci78"),
    _g("kamstrup_mc21_ctr_compact", "23442D2C998734761B168D20983081B2227A6FA1F10E1B79B5EB4B17E81F930E937EE06C",
       "76348799", KAM21_KEY, "volume", "6.409", "wmbusmeters tests/test_analyze.sh", "ci8d", "ell_ctr", "ci79"),
    _g("kamstrup_mc21_plain_full", "2D442D2C776655441B168D2083B48D3A20_46887802FF20000004132F4E000092013B3D01A1015B028101E7FF0F03",
       None, None, "volume", "20.015", "wmbusmeters src/driver_multical21.cc", "ci8d", "ci78"),
    _g("kamstrup_mc21_plain_compact", "21442D2C776655441B168D2079CC8C3A20_F4307912C40DFF00002F4E00003D010203",
       None, None, "volume", "20.015", "wmbusmeters src/driver_multical21.cc", "ci8d", "ci79"),
    _g("kamstrup_mc302_full", "2E442D2C6767676730048D2039D1684020_BCDB7803062C000043060000000314630000426C7F2A022D130001FF2100",
       None, None, "energy", "44000", "wmbusmeters src/driver_kamheat.cc", "ci8d", "ci78"),
    _g("kamstrup_mc302_compact", "25442D2C6767676730048D203AD2684020_D81579E7F1D5902C00000000006300007F2A130000",
       None, None, "energy", "44000", "wmbusmeters src/driver_kamheat.cc", "ci8d", "ci79"),
    _g("kamstrup_mc302_mj_full", "2E442D2C46464646300C8D207A70EA6021B1C178_030FC51000430F9210000314072B05426CBE2B022D0C0001FF2100",
       None, None, "energy", "11925000", "wmbusmeters src/driver_kamheat.cc", "ci8d", "ci78"),
    _g("kamstrup_mc302_mj_compact", "25442D2C46464646300C8D20D3E2EB60212B6D79E26DCD65_C51000921000152B05BE2B0C0000",
       None, None, "volume", "3387.09", "wmbusmeters src/driver_kamheat.cc", "ci8d", "ci79"),
    _g("kamstrup_mc603", "42442D2C3636363635048D20E18025B62087D078_0406A500000004FF072B01000004FF089C000000041421020000043B120000000259D014025D000904FF2200000000",
       None, None, "energy", "165000", "wmbusmeters src/driver_kamheat.cc", "ci8d", "ci78"),
    _g("kamstrup_mc603_inlet", "5A442D2C66666666350C8D2066D0E16420C6A178_0406051C000004FF07393D000004FF08AE2400000414F7680000043B47000000042D1600000002596D14025DFD0804FF22000000000422E61A0000143B8C010000142D7C000000",
       None, None, "volume", "268.71", "wmbusmeters src/driver_kamheat.cc", "ci8d", "ci78"),
    _g("kamstrup_heat_long", "5C442D2C06357260190C8D207B70032F21271D7802F9FF15011104061765000004EEFF07BFA8000004EEFF08D24F00000414B1FB000002FD170000026CE919426CFF184406F76400004414E8FA0000043B0B0000000259DB11025D1C0B5B",
       None, None, "volume", "644.33", "ioBroker.wmbus Short Telegram Test #1", "ci8d", "ci78"),
    _g("kamstrup_heat_compact", "3F442D2C06357260190C8D207C71032F21255C79DD829283011117650000BFA80000D24F0000B1FB00000000E919FF18F7640000E8FA00000B000000DB111C0B5B",
       None, None, "volume", "644.33", "ioBroker.wmbus Short Telegram Test #1", "ci8d", "ci79"),
    _g("axioma_qalcosonic_e3", "76440907086401030B0d7a78000000046d030fB726346d0000010134fd170000000004200f13cf0104240f13cf0104863B0000000004863cdc0000000413B5150600042B86f1ffff043B030200000259c002025d2c05026194fd0c780864010384086d3B17Bf258408863B000000008408863c0B000000",
       None, None, "volume", "398.773", "wmbusmeters src/driver_qualcosonic.cc", "ci7a", "mode0"),
    _g("axioma_qalcosonic_e4", "76440907021048290C0D7A89000000_046D2301E122346D0000010134FD17000000000420097468020424DE736802048E3BF1190000048E3C00000000041323860100042B6E050000043B2500000002598016025D000A0261800C0C780210482984086D3B17FF2184088E3BED19000084088E3C00000000",
       None, None, "volume", "99.875", "wmbusmeters src/driver_qualcosonic.cc", "ci7a", "mode0"),
    _g("diehl_hydrus_mode5_decrypted", "4E44A5116464646470077AED004005_2F2F01FD08300C13741100007C1300000000FC101300000000FC201300000000726C00000B3B00000002FD748713025A6800C4016D3B177F2ACC011300020000",
       None, None, "volume", "1.174", "wmbusmeters src/driver_hydrus.cc", "ci7a", "mode5"),
    _g("diehl_hydrus_warm", "3E44A5116565656570067AFB0030052F2F_0C13503400000DFD110A383731303134423032410B3B00000002FD74DC15C4016D3B178D29CC0113313400002F2F",
       None, None, "volume", "3.45", "wmbusmeters src/driver_hydrus.cc", "ci7a", "mode5"),
    _g("diehl_hydrus_mode7_decrypted", "6344A5112018646470078C00D7900F002C256AB59B00F0F13032019092DE7A6A004007102F2F0C13896729004C1323462400CC101300000000CC201323462400426CDF2C0B3B0200F002FD742F0D025AC100C4016D3B17FE29CC01132841290001FD089F",
       None, None, "volume", "296.789", "wmbusmeters src/driver_hydrus.cc", "ci8c", "ci90", "ci7a", "mode7"),
)  # fmt: skip
