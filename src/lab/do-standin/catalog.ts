/**
 * Static catalog of the DigitalOcean stand-in: regions, sizes and images. The subset has no
 * endpoints for these, but droplet objects embed them, so the stand-in needs plausible values
 * that satisfy the OpenAPI schemas (e.g. memory is a multiple of 8, image regions are region slugs).
 */

export interface RegionInfo {
  name: string;
  slug: string;
  features: string[];
  available: boolean;
  sizes: string[];
}

export interface SizeInfo {
  slug: string;
  memory: number;
  vcpus: number;
  disk: number;
  transfer: number;
  price_monthly: number;
  price_hourly: number;
  regions: string[];
  available: boolean;
  description: string;
}

export interface ImageInfo {
  id: number;
  name: string;
  type: "base";
  distribution: "Ubuntu" | "Debian";
  slug: string;
  public: boolean;
  regions: string[];
  created_at: string;
  min_disk_size: number;
  size_gigabytes: number;
  description: string;
  tags: string[];
  status: "available";
  error_message: string;
}

const REGION_NAMES: Record<string, string> = {
  nyc1: "New York 1",
  nyc3: "New York 3",
  sfo3: "San Francisco 3",
  ams3: "Amsterdam 3",
  fra1: "Frankfurt 1",
  lon1: "London 1",
  sgp1: "Singapore 1",
  tor1: "Toronto 1",
  blr1: "Bangalore 1",
  syd1: "Sydney 1",
};

const SIZE_SPECS: Array<[slug: string, memory: number, vcpus: number, disk: number, monthly: number]> = [
  ["s-1vcpu-512mb-10gb", 512, 1, 10, 4],
  ["s-1vcpu-1gb", 1024, 1, 25, 6],
  ["s-1vcpu-2gb", 2048, 1, 50, 12],
  ["s-2vcpu-2gb", 2048, 2, 60, 18],
  ["s-2vcpu-4gb", 4096, 2, 80, 24],
  ["s-4vcpu-8gb", 8192, 4, 160, 48],
];

export const REGION_SLUGS = Object.keys(REGION_NAMES);

const SIZES: SizeInfo[] = SIZE_SPECS.map(([slug, memory, vcpus, disk, monthly]) => ({
  slug,
  memory,
  vcpus,
  disk,
  transfer: 1,
  price_monthly: monthly,
  price_hourly: Math.round((monthly / 672) * 1e6) / 1e6,
  regions: [...REGION_SLUGS],
  available: true,
  description: "Basic",
}));

const REGIONS: RegionInfo[] = REGION_SLUGS.map((slug) => ({
  name: REGION_NAMES[slug] ?? slug,
  slug,
  features: ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"],
  available: true,
  sizes: SIZES.map((s) => s.slug),
}));

const IMAGES: ImageInfo[] = [
  image(160001, "24.04 (LTS) x64", "Ubuntu", "ubuntu-24-04-x64"),
  image(160002, "22.04 (LTS) x64", "Ubuntu", "ubuntu-22-04-x64"),
  image(160003, "12 x64", "Debian", "debian-12-x64"),
];

function image(id: number, name: string, distribution: ImageInfo["distribution"], slug: string): ImageInfo {
  return {
    id,
    name,
    type: "base",
    distribution,
    slug,
    public: true,
    regions: [...REGION_SLUGS],
    created_at: "2025-01-15T10:00:00Z",
    min_disk_size: 7,
    size_gigabytes: 2.5,
    description: `${distribution} ${name}`,
    tags: [],
    status: "available",
    error_message: "",
  };
}

export function findRegion(slug: string): RegionInfo | undefined {
  return REGIONS.find((r) => r.slug === slug);
}

export function findSize(slug: string): SizeInfo | undefined {
  return SIZES.find((s) => s.slug === slug);
}

export function findImage(ref: string | number): ImageInfo | undefined {
  return IMAGES.find((i) => (typeof ref === "number" ? i.id === ref : i.slug === ref || String(i.id) === ref));
}
