#!/usr/bin/env python3
"""An independent Modbus TCP server (pymodbus) serving a known register map.

Values are encoded here with Python's struct module, independently of propwatch's codec:
  holding 0-1  f32  CDAB   231.5
  holding 2-3  i32  ABCD   -123456
  holding 4    u16         1234      (profile scale 0.01 -> 12.34)
  holding 5    bits        0b1001    (bit0 = 1, bit1 = 0, bit3 = 1)
  holding 6    i16         -42
  holding 7-8  u32  CDAB   70000
  holding 9    (unused)
  coils 0-3                1 0 1 1
  discrete inputs 0-1      0 1
  input 0      u16         500       (profile scale 0.1 -> 50.0)
Only addresses 0-9 exist: a read beyond them draws an exception reply (illegal address).
Usage: pymodbus_server.py PORT
"""
import asyncio
import logging
import struct
import sys

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def cdab(ws):
    return list(reversed(ws))


HOLDING = (
    cdab(words("f", 231.5))
    + words("i", -123456)
    + [1234, 0b1001]
    + words("h", -42)
    + cdab(words("I", 70000))
    + [0]
)
assert len(HOLDING) == 10


async def main(port):
    logging.basicConfig(level=logging.WARNING)
    # pymodbus data blocks are 1-based internally: block address 1 is Modbus address 0.
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, HOLDING),
        co=ModbusSequentialDataBlock(1, [True, False, True, True]),
        di=ModbusSequentialDataBlock(1, [False, True]),
        ir=ModbusSequentialDataBlock(1, [500]),
    )
    context = ModbusServerContext(devices=device, single=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
