// VMware dashboard: a React component, default-exported. At install esbuild bundles it with
// the module's own react and react-dom (package.json) into one ES module the console mounts.
import { useEffect, useState } from "react";

interface VM {
  id: string;
  name: string;
  powerState: string;
  cpus: number;
  memoryMb: number;
  createdBy?: string;
}

interface Listing {
  items: VM[];
  total: number;
  syncedAt: string | null;
  hint?: string;
}

interface PageContext {
  apiBase: string;
  fetch: typeof fetch;
}

export default function VMwareDashboard({ apiBase, fetch }: PageContext) {
  const [listing, setListing] = useState<Listing | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    fetch(`${apiBase}/vms`)
      .then((response) => response.json())
      .then(setListing, (reason) => setError(String(reason)));
  }, [apiBase]);
  if (error) return <p role="alert">{error}</p>;
  if (!listing) return <p>Loading VMs…</p>;
  return (
    <section>
      <p>{listing.hint ?? `${listing.total} VMs, last synced ${listing.syncedAt}`}</p>
      <table>
        <thead>
          <tr>
            <th>Name</th>
            <th>Power</th>
            <th>CPUs</th>
            <th>Memory (MB)</th>
            <th>Created by</th>
          </tr>
        </thead>
        <tbody>
          {listing.items.map((vm) => (
            <tr key={vm.id}>
              <td>{vm.name}</td>
              <td>{vm.powerState}</td>
              <td>{vm.cpus}</td>
              <td>{vm.memoryMb}</td>
              <td>{vm.createdBy ?? "vCenter"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
