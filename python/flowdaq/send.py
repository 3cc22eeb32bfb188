"""`python -m flowdaq.send`: push simulated PL spectra, or a PTU file's records, to a server.

    python -m flowdaq.send tcp://127.0.0.1:5555 --count 10             # simulated PL spectra
    python -m flowdaq.send tcp://127.0.0.1:5555 --ptu beads.ptu        # a PTU file's T2/T3 records
    python -m flowdaq.send tcp://127.0.0.1:5557 --acknowledged ...      # DEALER: wait for acks

Without `--acknowledged` the endpoint is the server's PULL socket and the command returns once
the messages are handed to ZeroMQ (lingering up to 5 s); with it, the endpoint is the ROUTER
socket and the command returns once the server holds every message.
"""

import argparse
import time

import numpy as np

from .sender import Sender


def simulated_pl_counts(wavelength_nm: np.ndarray, peak_ev: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian PL band in energy at `peak_ev` (90 meV FWHM) on a flat background, with noise."""
    energy_ev = 1239.84198 / wavelength_nm
    counts = 1000 + 30000 * np.exp(-4 * np.log(2) * (energy_ev - peak_ev) ** 2 / 0.09 ** 2)
    return counts + rng.normal(0, 20, counts.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("endpoint", help="the server's PULL endpoint (ROUTER with --acknowledged)")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--source", default="python-example")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--ptu", default=None, help="send this PTU file's records instead of spectra")
    parser.add_argument("--records-per-message", type=int, default=65536)
    parser.add_argument("--acknowledged", action="store_true", help="DEALER with acknowledgements")
    args = parser.parse_args()

    with Sender(args.endpoint, args.source, acknowledged=args.acknowledged) as sender:
        if args.ptu:
            messages = sender.send_ptu(args.ptu, args.records_per_message, run_id=args.run_id)
            print(f"sent {messages} messages of {args.ptu} records to {args.endpoint}")
            return
        wavelength_nm = np.linspace(350.0, 1000.0, 2048)
        rng = np.random.default_rng(1)
        for seq in range(args.count):
            sender.send_spectrum(wavelength_nm, simulated_pl_counts(wavelength_nm, 2.45 + 0.01 * seq, rng),
                                 run_id=args.run_id, instrument_time_ns=time.time_ns())
    print(f"sent {args.count} spectra to {args.endpoint}")


if __name__ == "__main__":
    main()
