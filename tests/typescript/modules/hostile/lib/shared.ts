export function shared(): string {
  return "from lib/shared.ts";
}
