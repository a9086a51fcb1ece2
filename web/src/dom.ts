// Tiny DOM helpers. Renderers write through setText / setClass, which remember the last
// value per node and skip writes that change nothing (no DOM read, no needless layout).

const lastText = new WeakMap<Node, string>();
const lastClass = new WeakMap<Element, string>();

/** The element for `selector` (the page's static markup always has it). */
export function $<T extends HTMLElement = HTMLElement>(selector: string, root: ParentNode = document): T {
  const found = root.querySelector<T>(selector);
  if (!found) throw new Error('the page has no ' + selector);
  return found;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls = '',
  text?: string | null,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

export function setText(node: Node, text: string): void {
  if (lastText.get(node) !== text) {
    lastText.set(node, text);
    node.textContent = text;
  }
}

export function setClass(node: Element, cls: string): void {
  if (lastClass.get(node) !== cls) {
    lastClass.set(node, cls);
    node.className = cls;
  }
}

export function setData(node: HTMLElement, key: string, value: string): void {
  if (node.dataset[key] !== value) node.dataset[key] = value;
}

/** Drop list items beyond `cap` (the oldest are last). */
export function trim(list: Element, cap: number): void {
  while (list.children.length > cap) list.lastElementChild!.remove();
}
