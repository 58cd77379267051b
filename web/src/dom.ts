// A few DOM helpers: every text goes in as text, never as HTML.

type Attrs = Record<string, string | boolean | number | undefined | ((ev: Event) => void)>;
type Child = Node | string | false | null | undefined;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) {
      continue;
    }
    if (typeof v === "function") {
      el.addEventListener(k.replace(/^on/, ""), v);
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, ...children);
  return el;
}

export function append(el: Element, ...children: Child[]): void {
  for (const c of children) {
    if (c === false || c === null || c === undefined) {
      continue;
    }
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
}

/** A labelled form field; its error line names the same field. */
export function field(label: string, input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  const id = input.id || "f-" + (input.getAttribute("name") ?? label).replace(/[^a-z0-9]+/gi, "-");
  input.id = id;
  const err = h("p", { class: "field-error", id: id + "-error", role: "alert", "data-error-for": input.getAttribute("name") ?? "" });
  err.hidden = true;
  input.setAttribute("aria-describedby", id + "-error");
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("p", { class: "hint" }, hint) : null, err);
}

export function select(name: string, options: [string, string][], value = ""): HTMLSelectElement {
  const s = h("select", { name });
  for (const [v, label] of options) {
    s.append(h("option", { value: v, selected: v === value }, label));
  }
  return s;
}

export function input(name: string, attrs: Attrs = {}): HTMLInputElement {
  return h("input", { name, type: "text", autocomplete: "off", spellcheck: "false", ...attrs });
}

/** Shows each violation under the input whose name is its field; returns those with no input. */
export function showFieldErrors(form: HTMLElement, fields: Map<string, string>): Map<string, string> {
  clearFieldErrors(form);
  const rest = new Map<string, string>();
  for (const [name, msg] of fields) {
    const err = form.querySelector<HTMLElement>(`[data-error-for="${CSS.escape(name)}"]`);
    if (err) {
      err.textContent = msg;
      err.hidden = false;
      form.querySelector(`[name="${CSS.escape(name)}"]`)?.setAttribute("aria-invalid", "true");
    } else {
      rest.set(name, msg);
    }
  }
  return rest;
}

export function clearFieldErrors(form: HTMLElement): void {
  for (const err of form.querySelectorAll<HTMLElement>("[data-error-for]")) {
    err.textContent = "";
    err.hidden = true;
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
  }
}

/** A key-value list (dl) of the pairs whose value is not empty. */
export function facts(pairs: [string, Child][]): HTMLElement {
  const dl = h("dl", { class: "facts" });
  for (const [k, v] of pairs) {
    if (v === "" || v === false || v === null || v === undefined) {
      continue;
    }
    dl.append(h("dt", {}, k), h("dd", {}, v));
  }
  return dl;
}
