// Render scheduling: SDK events only change state and mark what to redraw; one
// requestAnimationFrame callback runs every marked renderer once. At the demo's rates
// (tens of messages per second, live figures every 250 ms per account) each frame
// writes the DOM at most once per part, however many messages arrived since the last.

type Renderer = () => void;

const dirty = new Set<Renderer>();
let scheduled = false;
let onError: (error: unknown) => void = (error) => console.error(error);

/** Redraw `renderer` in the next animation frame (once, however often it is marked). */
export function mark(renderer: Renderer): void {
  dirty.add(renderer);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(flush);
  }
}

/** Forget pending redraws (a view that is going away must not draw again). */
export function unmark(...renderers: Renderer[]): void {
  for (const renderer of renderers) dirty.delete(renderer);
}

export function onRenderError(handler: (error: unknown) => void): void {
  onError = handler;
}

/** Frames rendered so far (the footer shows it; tests may read it). */
export let frames = 0;

function flush(): void {
  scheduled = false;
  frames++;
  const renderers = [...dirty];
  dirty.clear();
  for (const render of renderers) {
    try {
      render();
    } catch (error) {
      onError(error);
    }
  }
}
