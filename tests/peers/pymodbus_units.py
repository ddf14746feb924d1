#!/usr/bin/env python3
"""An independent Modbus TCP server (pymodbus) with several unit ids, like a gateway in front
of an RS-485 bus: only the units named answer (others get no reply at all, as on a real
bus), and every unit gives the basic device identification (FC 43/14).
Usage: pymodbus_units.py PORT|serial:TTY UNIT[,UNIT...]   (serial: RTU at 19200 8N1; a Linux pty takes no parity)
"""
import asyncio
import logging
import sys

from pymodbus import ModbusDeviceIdentification
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer


async def main(port, units):
    logging.basicConfig(level=logging.WARNING)
    devices = {
        u: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [u, 0, 0, 0]))
        for u in units
    }
    context = ModbusServerContext(devices=devices, single=False)
    identity = ModbusDeviceIdentification(
        info_name={"VendorName": "PeerVendor", "ProductCode": "PV-100", "MajorMinorRevision": "2.1"}
    )
    if isinstance(port, str):
        # RTU on a serial line (a socat pty in the tests): only the units named answer
        await StartAsyncSerialServer(
            context=context,
            identity=identity,
            port=port,
            framer="rtu",
            baudrate=19200,
            bytesize=8,
            parity="N",
            stopbits=1,
            ignore_missing_devices=True,
        )
        return
    await StartAsyncTcpServer(
        context=context,
        identity=identity,
        address=("127.0.0.1", port),
        ignore_missing_devices=True,
    )


if __name__ == "__main__":
    where = sys.argv[1]
    port = where[len("serial:"):] if where.startswith("serial:") else int(where)
    asyncio.run(main(port, [int(u) for u in sys.argv[2].split(",")]))
